"""Checkpoints: embedded source, weights_only loading, atomic writes."""

import os

import pytest
import torch

import gelanc
from gelanc.backend.checkpoint import CheckpointError, read
from gelanc.dsl.loader import library_root

SPECS = library_root() / "specs"


@torch.no_grad()
def test_round_trip_train_and_deploy(tmp_path, monkeypatch):
    m = gelanc.compile(SPECS / "yolov9-t.gel", nc=7)
    for p in m.parameters():
        p.add_(torch.randn_like(p) * 0.01)
    d = gelanc.deploy(m)
    gelanc.save(m, tmp_path / "train.pt")
    gelanc.save(d, tmp_path / "deploy.pt")
    monkeypatch.chdir(tmp_path)  # the spec files are not needed: the source is embedded
    x = torch.rand(1, 3, 64, 64)
    for ref, path in ((m, "train.pt"), (d, "deploy.pt")):
        back = gelanc.load(tmp_path / path).eval()
        assert torch.equal(back(x)[0], ref.eval()(x)[0])
    meta = read(tmp_path / "deploy.pt")["meta"]
    assert meta["params"] == {"nc": 7} and meta["deployed"] is True
    assert "block DualDDetect" in "".join(meta["sources"].values())


def test_loading_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "gelanc-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="asks to call posix.system"):
        gelanc.load(path)
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        gelanc.load(tmp_path / "junk.pt")
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a gelanc checkpoint"):
        gelanc.load(tmp_path / "other.pt")


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    m = gelanc.compile(SPECS / "gelan-t.gel")
    target = tmp_path / "out.pt"
    gelanc.save(m, target)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        gelanc.save(m, target)
    assert target.read_bytes() == before  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]  # no temporary left


def test_save_on_a_full_disk_is_a_write_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The disk fills while torch.save streams the archive: torch's own error (a RuntimeError
    from its zip writer) must not hide the reason, and nothing may be left."""
    import errno

    from gelanc import atomic
    from gelanc.atomic import WriteError

    m = gelanc.compile(SPECS / "gelan-t.gel")
    target = tmp_path / "out.pt"
    target.write_bytes(b"the previous checkpoint")
    written = [0]

    def write_some(self, view):  # what a filling disk does: a short write, then ENOSPC
        if written[0] >= 50_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(self._fd, view[:50_000 - written[0]])
        written[0] += n
        return n

    monkeypatch.setattr(atomic._Sink, "_write_some", write_some)
    with pytest.raises(WriteError) as e:
        gelanc.save(m, target)
    assert e.value.errno == errno.ENOSPC and str(e.value) == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


def test_save_refuses_to_replace_a_symlink(tmp_path):
    from gelanc.atomic import UnsafeTarget

    victim = tmp_path / "victim.pt"
    victim.write_bytes(b"precious")
    (tmp_path / "out.pt").symlink_to(victim)
    with pytest.raises(UnsafeTarget, match="symbolic link"):
        gelanc.save(gelanc.compile(SPECS / "gelan-t.gel"), tmp_path / "out.pt")
    assert (tmp_path / "out.pt").is_symlink() and victim.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt", "victim.pt"]
