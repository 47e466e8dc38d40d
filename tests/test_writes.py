"""Every write is whole or absent, and never destroys what is not gelanc's.

Targets that are not regular files (symbolic links, FIFOs, device nodes, folders) and
targets that are the command's own inputs are refused and left as they were; a write
that fails — a full disk, real (a 64 KiB tmpfs, where this process may mount one) or
simulated — leaves the previous file, or nothing, and no temporary file beside it.
"""

from __future__ import annotations

import errno
import gc
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gelanc
import gelanc.backend.checkpoint
from gelanc import atomic
from gelanc.atomic import UnsafeTarget, WriteError
from gelanc.cli import main
from gelanc.dsl.loader import library_root

SPECS = library_root() / "specs"
TINY = Path(__file__).parent / "specs" / "nobn.gel"  # a small detector: fast to export, far over 64 KiB
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs and device nodes are POSIX")


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def mount_tmpfs(folder: Path, options: str) -> None:
    """A 64 KiB tmpfs (with ``options``) mounted on ``folder``; the test is skipped where
    mounting is not permitted."""
    folder.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=64k{options}", "tmpfs", str(folder)],
                           capture_output=True)
    except OSError:
        pytest.skip("no mount command")
    if r.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs: a real full disk (ENOSPC from the kernel), where mounting is permitted."""
    folder = tmp_path / "full"
    mount_tmpfs(folder, "")
    yield folder
    gc.collect()
    # "target is busy" here would mean a write left a file open on the full disk
    subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def device_node(tmp_path):
    """A character device node of our own (a copy of /dev/null's numbers), so that a
    regression replaces a node in tmp_path, never the system's."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (OSError, AttributeError):
        pytest.skip("cannot make a device node here (not root)")
    return node


# ---- refused targets ---------------------------------------------------------------


WRITERS = {
    "text": lambda p: atomic.write_text(p, "new"),
    "torch.save": lambda p: gelanc.backend.checkpoint.atomic_save({"x": torch.zeros(3)}, p),
    "copy": lambda p: atomic.atomic_copy(Path(__file__), p),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_symlink_target_is_refused_and_neither_it_nor_its_file_changes(writer, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out"
    link.symlink_to(victim)
    with pytest.raises(UnsafeTarget, match="symbolic link"):
        WRITERS[writer](link)
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_text() == "precious"
    assert listing(tmp_path) == ["out", "victim.txt"]  # no temporary left


@posix_only
def test_a_fifo_a_folder_and_a_device_node_are_refused(tmp_path, device_node):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside").write_text("kept")
    before = {p: os.lstat(p) for p in (fifo, folder, device_node)}
    for target, kind in ((fifo, "FIFO"), (folder, "folder"), (device_node, "character device")):
        with pytest.raises(UnsafeTarget, match=kind):
            atomic.write_text(target, "x")
    for p, st in before.items():
        now = os.lstat(p)
        assert (now.st_ino, now.st_mode, now.st_rdev) == (st.st_ino, st.st_mode, st.st_rdev)
    assert (folder / "inside").read_text() == "kept"
    assert listing(tmp_path) == ["fifo", "folder", "null"]


def test_dev_null_is_recognised_as_a_device():
    # only the check is run on the system's /dev/null: nothing is ever written to it
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    with pytest.raises(UnsafeTarget, match="character device"):
        atomic.check_target("/dev/null")


def test_the_check_right_before_the_rename_catches_a_link_made_during_the_write(tmp_path):
    target = tmp_path / "out.txt"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")

    def write(tmp: Path) -> None:
        tmp.write_text("new")
        target.symlink_to(victim)  # appears while the (long) write runs

    with pytest.raises(UnsafeTarget, match="symbolic link"):
        atomic.atomic_write(target, write)
    assert target.is_symlink() and victim.read_text() == "precious"
    assert listing(tmp_path) == ["out.txt", "victim.txt"]


@posix_only
def test_cli_outputs_to_a_link_a_fifo_or_a_device_are_refused(tmp_path, capsys, device_node):
    yaml_in = tmp_path / "m.yaml"
    yaml_in.write_text("nc: 2\nbackbone:\n  [[-1, 1, Conv, [16, 3, 2]]]\nhead:\n  [[[0], 1, Detect, [nc]]]\n")
    victim = tmp_path / "victim.gel"
    victim.write_text("precious")
    link = tmp_path / "link.gel"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.gel"
    os.mkfifo(fifo)
    for target in (link, fifo, device_node):
        code = main(["import-yaml", str(yaml_in), "-o", str(target)])
        err = capsys.readouterr().err
        assert code == 2 and "only regular files" in err and str(target) in err, err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert victim.read_text() == "precious" and link.is_symlink()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and stat.S_ISCHR(os.lstat(device_node).st_mode)


def test_cli_never_writes_over_its_own_input(tmp_path, capsys):
    yaml_in = tmp_path / "m.yaml"
    text = "nc: 2\nbackbone:\n  [[-1, 1, Conv, [16, 3, 2]]]\nhead:\n  [[[0], 1, Detect, [nc]]]\n"
    yaml_in.write_text(text)
    code = main(["import-yaml", str(yaml_in), "-o", str(tmp_path / "." / "m.yaml")])  # the same file, spelt apart
    err = capsys.readouterr().err
    assert code == 2 and "it is the input" in err
    assert yaml_in.read_text() == text

    ckpt = tmp_path / "m.pt"
    gelanc.save(gelanc.compile(TINY, nc=2), ckpt)
    before = ckpt.read_bytes()
    for argv in (["export-weights", str(ckpt), "-o", str(ckpt)],
                 ["export", str(ckpt), "--format", "torchscript", "--imgsz", "64", "-o", str(ckpt)]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "it is the input" in err, err
    assert ckpt.read_bytes() == before
    assert listing(tmp_path) == ["m.pt", "m.yaml"]


# ---- gelanc predict: never into its sources ----------------------------------------


@pytest.fixture
def predict_setup(tmp_path):
    from torchvision.io import write_png

    ckpt = tmp_path / "m.pt"
    gelanc.save(gelanc.compile(TINY, nc=2), ckpt)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.png", "sub/b.png"):
        write_png(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8), str(src / name))
    images = {p: p.read_bytes() for p in src.rglob("*.png")}
    return ckpt, src, images


@pytest.mark.parametrize("where, message", [
    (".", "it is the source folder"),
    ("sub", "inside the source folder"),
    ("sub/deeper", "inside the source folder"),
])
def test_predict_refuses_an_output_folder_in_its_sources(predict_setup, capsys, where, message):
    ckpt, src, images = predict_setup
    code = main(["predict", str(ckpt), str(src), "-o", str(src / where), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(src) in err, err
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == images
    assert not (src / "predictions.json").exists() and not (src / "sub" / "deeper").exists()


def test_predict_refuses_to_overwrite_an_input_file(predict_setup, capsys):
    ckpt, src, images = predict_setup
    # a single file as the source, its own folder as the output: the drawn a.png would replace it
    code = main(["predict", str(ckpt), str(src / "a.png"), "-o", str(src), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and f"it is the input {src / 'a.png'}" in err, err
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == images
    assert not (src / "predictions.json").exists()


def test_predict_refuses_a_link_among_its_outputs_before_any_work(predict_setup, tmp_path, capsys):
    ckpt, src, _ = predict_setup
    out = tmp_path / "pred"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out / "b.png").symlink_to(victim)
    code = main(["predict", str(ckpt), str(src), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "symbolic link" in err
    assert listing(out) == ["b.png"] and victim.read_text() == "precious"  # a.png not drawn either


# ---- a full disk ---------------------------------------------------------------------


def test_a_failed_streamed_write_leaves_the_old_file_and_no_temporary(tmp_path, disk_fills_after):
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    disk_fills_after(after=100)
    with pytest.raises(WriteError) as e:
        gelanc.backend.checkpoint.atomic_save({"x": torch.zeros(1000)}, target)
    assert str(e.value) == f"cannot write {target}: {os.strerror(errno.ENOSPC)}"
    assert e.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old" and listing(tmp_path) == ["out.pt"]


def test_real_full_disk_every_writer(full_disk, tmp_path):
    (full_disk / "keep.txt").write_text("old")
    big = "x" * (1 << 17)
    elsewhere = tmp_path / "big.bin"  # on another filesystem: no hard link, a copy
    elsewhere.write_bytes(os.urandom(1 << 17))
    writers = {
        "keep.txt": lambda p: atomic.write_text(p, big),
        "a.pt": lambda p: gelanc.backend.checkpoint.atomic_save({"x": torch.zeros(1 << 15)}, p),
        # a writer handed a path: torch's C++ writer fails with a RuntimeError, reported as ENOSPC
        "b.pt": lambda p: atomic.atomic_write(p, lambda tmp: torch.save({"x": torch.zeros(1 << 15)}, tmp)),
        "c.bin": lambda p: atomic.atomic_copy(elsewhere, p),
    }
    for name, write in writers.items():
        with pytest.raises(WriteError, match="No space left on device"):
            write(full_disk / name)
        assert listing(full_disk) == ["keep.txt"], name
    assert (full_disk / "keep.txt").read_text() == "old"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_on_a_real_full_disk_is_one_line_and_leaves_nothing(fmt, full_disk, capsys):
    code = main(["export", str(TINY), "--format", fmt, "--imgsz", "64", "-o", str(full_disk / f"m.{fmt}")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == f"gelanc: error: cannot write {full_disk / f'm.{fmt}'}: No space left on device"
    assert not any("frame #" in line or "Traceback" in line for line in err)
    assert listing(full_disk) == []


def test_build_on_a_real_full_disk_writes_none_of_its_files(full_disk, capsys):
    code = main(["build", str(TINY), "-o", str(full_disk / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err
    assert listing(full_disk) == []  # not even the folder it made


def test_a_ctrl_c_inside_torch_save_stays_a_ctrl_c(tmp_path, monkeypatch):
    """torch's C++ writer turns an exception of its Python file into a RuntimeError
    ("unexpected pos …"): the interrupt must come out as itself, with nothing written."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")
    calls, write_some = [0], atomic._Sink._write_some

    def interrupted(self, view):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return write_some(self, view)

    monkeypatch.setattr(atomic._Sink, "_write_some", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gelanc.backend.checkpoint.atomic_save({"a": torch.zeros(100_000), "b": torch.ones(1000)}, target)
    assert calls[0] == 3 and target.read_bytes() == b"old" and listing(tmp_path) == ["last.pt"]


# ---- a bad output location is refused before the work, naming what was given -------------


@pytest.fixture
def read_only(tmp_path):
    """A folder nothing can be written in: a read-only tmpfs (even root cannot write there),
    or, for another user, a folder without write permission."""
    folder = tmp_path / "ro"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mount_tmpfs(folder, ",ro")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _writers(tmp_path: Path, out: Path) -> dict[str, list[str]]:
    """Every writing command with its output at ``out``, and inputs that are missing or broken:
    were the output checked after reading them, their error would be the one reported."""
    bad_yaml = tmp_path / "m.yaml"
    bad_yaml.write_text("nc: 2\nbackbone:\n  - [-1, 1, C2f, [16]]\nhead:\n  - [-1, 1, Detect, [nc]]\n")
    missing = str(tmp_path / "missing.pt")
    return {
        "export": ["export", str(tmp_path / "missing.gel"), "--format", "onnx", "-o", str(out / "m.onnx")],
        "build": ["build", str(tmp_path / "missing.gel"), "-o", str(out / "b")],
        "import-yaml": ["import-yaml", str(bad_yaml), "-o", str(out / "m.gel")],
        "export-weights": ["export-weights", missing, "-o", str(out / "w.pt")],
        "import-weights": ["import-weights", missing, "--spec", str(TINY), "-o", str(out / "w.pt")],
        "features": ["features", "plainnet", "--depths", "1", "--width", "1", "--imgsz", "16", "-o",
                     str(out / "f.png")],
        "data synth": ["data", "synth", "-o", str(out / "d"), "--images", "1", "--val", "1"],
        "bench": ["bench", "--models", str(TINY), "--quick", "--device", "cpu", "-o", str(out / "b.json")],
    }


@pytest.mark.parametrize("command", ["export", "build", "import-yaml", "export-weights", "import-weights", "features",
                                     "data synth", "bench"])
def test_an_output_under_a_file_is_refused_first_naming_it(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    argv = _writers(tmp_path, afile)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    out = argv[argv.index("-o") + 1]
    assert err.startswith(f"gelanc: error: cannot write {out}: {afile} is a file, not a folder"), err
    assert err.count("\n") == 1  # one line: no progress printed, no work begun
    assert afile.read_text() == "mine"


@pytest.mark.parametrize("command", ["export", "build", "import-yaml", "export-weights", "import-weights", "features",
                                     "data synth", "bench"])
def test_an_output_in_a_read_only_folder_is_refused_first(read_only, tmp_path, capsys, command):
    argv = _writers(tmp_path, read_only)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    out = argv[argv.index("-o") + 1]
    assert err.startswith(f"gelanc: error: cannot write {out}: "), err
    assert "Read-only file system" in err or "Permission denied" in err
    assert err.count("\n") == 1 and listing(read_only) == []


def test_predict_into_a_file_is_refused_before_the_model_is_loaded(predict_setup, tmp_path, capsys):
    _, src, images = predict_setup
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")  # loading it first would be the error reported
    image = src / "a.png"
    code = main(["predict", str(broken), str(image), "-o", str(image), "--device", "cpu"])  # -o: the image itself
    err = capsys.readouterr().err
    assert code == 2
    assert err == f"gelanc: error: cannot write {image}: it is a file, not a folder (-o takes a folder)\n"
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == images


def test_predict_into_a_read_only_folder_is_refused_before_the_model_is_loaded(predict_setup, read_only, tmp_path,
                                                                               capsys):
    _, src, _ = predict_setup
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    code = main(["predict", str(broken), str(src), "-o", str(read_only / "p"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"gelanc: error: cannot write {read_only / 'p'}: "), err
    assert listing(read_only) == []


def test_write_all_names_the_folder_not_its_staging_name(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    with pytest.raises(WriteError) as e:
        atomic.write_all(afile, {"a.txt": lambda tmp: tmp.write_text("x")})
    assert e.value.filename == str(afile) and "batch" not in str(e.value)
    assert afile.read_text() == "mine"


def test_check_output_names_the_target_and_why(tmp_path):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(WriteError, match=f"cannot write {tmp_path}/afile/x/y.pt: {tmp_path}/afile is a file"):
        atomic.check_output(tmp_path / "afile" / "x" / "y.pt")
    with pytest.raises(UnsafeTarget, match="it is a folder"):
        atomic.check_output(tmp_path)
    with pytest.raises(UnsafeTarget, match="it is the input"):
        atomic.check_output(tmp_path / "afile", [tmp_path / "afile"])
    atomic.check_output(tmp_path / "new" / "deeper" / "x.pt")  # folders gelanc would make: fine
    assert listing(tmp_path) == ["afile"]  # and nothing was made to find out
