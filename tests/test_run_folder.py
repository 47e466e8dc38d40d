"""A training run's folder stays consistent: after a kill at any point, a full disk, or
a bad --out.

Kills are simulated by leaving the folder as a kill leaves it (a checkpoint whose best
epoch was never copied to best.pt, a results table a row short, gelanc's temporary
files) and resuming. Runs are tiny: gelan-t at 64 px on four synthetic images, one
epoch at a time.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gelanc import atomic
from gelanc.backend.checkpoint import read
from gelanc.cli import main
from gelanc.data.synth import write
from gelanc.dsl.loader import library_root
from gelanc.train import loop
from gelanc.train.args import TrainArgs, TrainError
from gelanc.train.loop import train
from gelanc.train.resume import resume_args

SPEC = library_root() / "specs" / "gelan-t.gel"
FAST = {"warmup_epochs": 0.0, "mosaic": 0.5, "mixup": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("synth") / "d", images=4, val=2, size=64, seed=3)


@pytest.fixture(scope="module")
def unfinished(data, tmp_path_factory):
    """One epoch whose copy to best.pt never happened (as if killed right after last.pt was
    replaced): last.pt of epoch 1 — the best — and no best.pt. Returns (folder, summary)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    args = TrainArgs(spec=str(SPEC), data=str(data), epochs=1, imgsz=64, batch=4, workers=0, out=str(out),
                     device="cpu", deterministic=True, progress=False, hyp=FAST, plots=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic, "atomic_copy", lambda src, dst: None)
        summary = train(args).summary
    return out, summary


def copy_of(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_the_summary_names_best_pt_only_if_it_exists(unfinished):
    out, summary = unfinished
    assert not (out / "best.pt").exists()
    assert summary["best"] is None and summary["last"] == str(out / "last.pt")


def test_resume_after_a_kill_repairs_the_folder_before_anything_else(unfinished, tmp_path):
    out = copy_of(unfinished[0], tmp_path)
    (out / "results.csv").unlink()  # killed before the table was rewritten, too
    # what kill -9 leaves mid-write: this gelanc's temporary folders, an earlier one's files
    (out / ".last.pt.k1ll3d_1.gelanc-tmp").mkdir()
    (out / ".last.pt.k1ll3d_1.gelanc-tmp" / "last.pt").write_bytes(b"half a checkpoint")
    (out / ".best.pt.abcd1234.pt").write_bytes(b"half")
    (out / ".results.csv.zzzz9999.csv").write_text("epoch,")
    # and what is not gelanc's: kept
    keep = {".last.pt.notmine.pt": "x", ".other.pt.abcd1234.pt": "x", "notes.txt": "mine",
            ".last.pt.abcd1234.pt.bak": "x"}
    for name, text in keep.items():
        (out / name).write_text(text)
    (out / ".results.png.abcd1234.png").symlink_to(out / "notes.txt")  # not a regular file: not ours

    last = out / "last.pt"
    with pytest.raises(TrainError, match="already finished its 1 epochs"):
        train(resume_args(last), resume=last)
    assert (out / "best.pt").read_bytes() == last.read_bytes()  # epoch 1 was the best
    assert read(out / "best.pt")["train"]["epoch"] == 1
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["best.pt", "last.pt", "results.csv", "results.png", ".results.png.abcd1234.png", *keep])
    assert all((out / name).read_text() == text for name, text in keep.items())


def test_a_failed_save_stops_the_run_with_what_is_on_disk(unfinished, tmp_path, capsys, monkeypatch):
    out = copy_of(unfinished[0], tmp_path)
    last = out / "last.pt"
    before = last.read_bytes()
    real_save = loop.save_checkpoint

    def save_on_a_full_disk(path, **kw):  # the disk fills while last.pt is written
        def write_some(self, view):
            n = os.write(self._fd, view[:4096])
            if n < len(view):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return n

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(atomic._Sink, "_write_some", write_some)
            real_save(path, **kw)

    monkeypatch.setattr(loop, "save_checkpoint", save_on_a_full_disk)
    code = main(["train", "--resume", str(last), "--epochs", "2", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == (f"gelanc: error: cannot write {last}: No space left on device; the run stopped after "
                       f"training epoch 2 without saving it: {last} still holds epoch 1, intact; make room, then "
                       f"continue with: gelanc train --resume {last}")
    assert last.read_bytes() == before  # so the command it names resumes epoch 1's run
    # the resume repaired best.pt first; the failed save left nothing of its own
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "last.pt", "results.csv", "results.png"]
    assert len((out / "results.csv").read_text().splitlines()) == 2


@pytest.fixture
def no_scan(monkeypatch):
    """The --out checks come first: a dataset scan or a model build would be too late."""
    monkeypatch.setattr(loop, "load_data", lambda *a, **k: pytest.fail("scanned the data before checking --out"))
    monkeypatch.setattr(loop, "_build_model", lambda *a, **k: pytest.fail("built the model before checking --out"))


def train_cli(out: Path, data: Path) -> list[str]:
    return ["train", str(SPEC), "--data", str(data), "--epochs", "1", "--imgsz", "64", "--batch", "4",
            "--workers", "0", "--device", "cpu", "-q", "--out", str(out)]


def test_out_that_is_a_file_is_a_user_error(tmp_path, capsys, no_scan):
    f = tmp_path / "taken"
    f.write_text("a file")
    assert main(train_cli(f, tmp_path / "no.yaml")) == 2
    assert capsys.readouterr().err.strip() == f"gelanc: error: --out {f}: it is a file, not a folder"
    assert main(train_cli(f / "run", tmp_path / "no.yaml")) == 2
    assert capsys.readouterr().err.strip() == f"gelanc: error: --out {f / 'run'}: {f} is a file, not a folder"
    assert f.read_text() == "a file"


def test_out_in_a_read_only_folder_is_a_user_error(tmp_path, capsys, no_scan):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                             capture_output=True).returncode == 0 if shutil.which("mount") else False
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root writes in any folder, and no read-only mount here")
        ro.chmod(0o555)
    try:
        for out in (ro, ro / "run"):
            assert main(train_cli(out, tmp_path / "no.yaml")) == 2
            err = capsys.readouterr().err.strip()
            assert err.startswith(f"gelanc: error: --out {out}: ")
            assert err.endswith(("Read-only file system", "Permission denied")), err
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            ro.chmod(0o755)


def _damage(path: Path, change) -> None:
    import torch

    ckpt = read(path)
    change(ckpt)
    torch.save(ckpt, path)


@pytest.mark.parametrize("change, why", [
    (lambda c: c["train"].update(optimizer="adam"), "its training state is damaged (train.optimizer: "),
    (lambda c: c["train"].update(epoch=-3), "its training state is damaged (train.epoch: "),
    (lambda c: c["train"].pop("scaler"), "its training state is damaged (train.scaler: Field required)"),
    (lambda c: c["train"].update(optimizer={"state": {}, "param_groups": []}),
     "its optimizer state does not fit the model (ValueError)"),
    (lambda c: c["train"]["model"].update({k: v.flatten() for k, v in list(c["train"]["model"].items())[:1]}),
     "the embedded spec needs"),
])
def test_resuming_a_damaged_training_state_is_a_user_error(unfinished, tmp_path, data, capsys, change, why):
    out = copy_of(unfinished[0], tmp_path)
    _damage(out / "last.pt", change)
    code = main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", "--data", str(data), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and why in err and "Traceback" not in err, err


def _dag(depth: int):
    v = [1]
    for _ in range(depth):
        v = [v, v]
    return v


@pytest.mark.parametrize("change, why", [
    (lambda c: c["train"]["args"].update(params={"x": _dag(60)}),
     "its stored run setting 'params' is refused: model parameter 'x': lists nested more than 16 deep"),
    (lambda c: c["train"]["args"].update(workers=10**6), "workers"),
    (lambda c: c["train"]["args"].update(batch=10**9), "batch"),
    (lambda c: c["train"]["args"].update(seed=10**40), "seed"),
    (lambda c: c["train"].update(ema_updates=10**30), "train.ema_updates"),
    (lambda c: c["train"].update(rows=[{"epoch": 1.0}]), "a results row lacks metrics/mAP50"),
])
def test_a_resumed_runs_stored_settings_are_checked_first(unfinished, tmp_path, data, capsys, monkeypatch, change,
                                                          why):
    out = copy_of(unfinished[0], tmp_path)
    _damage(out / "last.pt", change)
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained before refusing"))
    code = main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and why in err and "Traceback" not in err, err


def test_a_momentum_of_the_wrong_shape_is_refused_before_training(unfinished, tmp_path, capsys, monkeypatch):
    import torch

    def wrong(c):
        state = c["train"]["optimizer"]["state"]
        k = next(iter(state))
        state[k]["momentum_buffer"] = torch.zeros(3, 3)

    out = copy_of(unfinished[0], tmp_path)
    _damage(out / "last.pt", wrong)
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained before refusing"))
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", "-q"]) == 2
    assert "its optimizer state does not fit the model (ValueError)" in capsys.readouterr().err


def test_stored_settings_that_cannot_fit_the_machine_are_refused(unfinished, tmp_path, capsys, monkeypatch):
    out = copy_of(unfinished[0], tmp_path)
    _damage(out / "last.pt", lambda c: c["train"]["args"].update(imgsz=4096, batch=8))
    monkeypatch.setattr(loop, "train_epoch", lambda *a, **k: pytest.fail("trained before refusing"))
    from gelanc.passes import budget

    monkeypatch.setattr(budget, "device_memory", lambda device: 24 << 30)
    assert main(["train", "--resume", str(out / "last.pt"), "--epochs", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "a training step at 4096×4096 with 8 images per process keeps about" in err and "24.0 GiB" in err


def test_a_first_epoch_that_fails_leaves_no_empty_run_folder(data, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(loop, "train_epoch", broken)
    with pytest.raises(RuntimeError):
        train(TrainArgs(spec=str(SPEC), data=str(data), epochs=1, imgsz=64, batch=4, workers=0,
                        out=str(tmp_path / "new"), device="cpu", progress=False, plots=False))
    assert not (tmp_path / "new").exists()


def test_a_ctrl_c_after_last_pt_names_the_saved_epoch(tmp_path):
    from gelanc.train.epoch import State
    from gelanc.train.run_folder import write_epoch

    state = State(epoch=3, rows=[{"epoch": 3.0, "metrics/mAP50": 0.1, "metrics/mAP50-95": 0.05}])

    def save(path):
        path.write_bytes(b"checkpoint")

    with pytest.MonkeyPatch.context() as mp:
        from gelanc.train import results

        mp.setattr(results, "write_csv", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            write_epoch(tmp_path, state, best=False, title="", save_last=save)
    assert state.saved == 3  # what the interrupt message names
