"""`gelanc build` and `gelanc export`: files written, checked, and nothing half-written."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import gelanc
from gelanc.backend.export import export
from gelanc.cli import main
from gelanc.dsl.loader import library_root

SPECS = library_root() / "specs"


def test_build_writes_code_ir_stats_checkpoint(tmp_path, capsys):
    assert main(["build", str(SPECS / "yolov9-t.gel"), "-o", str(tmp_path), "--json", "--set", "nc=3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    files = {k: tmp_path / p.split("/")[-1] for k, p in summary["files"].items()}
    assert summary["params"] == json.loads(files["stats"].read_text())["train"]["params"]
    assert "def forward(self, x):" in files["code"].read_text()
    ir = json.loads(files["ir"].read_text())
    assert ir["model"] == "yolov9_t" and any(n["branch"] == "aux" for n in ir["nodes"])
    m = gelanc.load(files["checkpoint"])
    assert sum(p.numel() for p in m.parameters()) == summary["params"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in files.values())


@pytest.mark.parametrize("spec", ["gelan-c", "yolov9-c"])
def test_onnx_export_of_deploy_graph_matches_pytorch(spec, tmp_path):
    m = gelanc.deploy(gelanc.compile(SPECS / f"{spec}.gel"))
    report = export(m, "onnx", tmp_path / "m.onnx", (320, 320))
    assert report["max_rel_error"] <= 1e-4 and report["output"] == [1, 84, 2100]


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "onnx"])
def test_dynamic_exports_run_at_other_sizes(fmt, tmp_path):
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel", nc=2)).eval()
    path = tmp_path / f"m.{fmt}"
    export(m, fmt, path, (160, 160), dynamic=True)
    x = torch.rand(3, 3, 96, 128)
    with torch.no_grad():
        ref = m(x)[0]
        if fmt == "torchscript":
            got = torch.jit.load(str(path))(x)
        elif fmt == "pt2":
            got = torch.export.load(str(path)).module()(x)
        else:
            import onnxruntime as ort
            got = torch.from_numpy(ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})[0])
    assert got.shape == ref.shape == (3, 6, 12 * 16 + 6 * 8 + 3 * 4)
    assert torch.allclose(got, ref, atol=1e-3)


def test_export_half(tmp_path):
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel", nc=2))
    report = export(m, "onnx", tmp_path / "h.onnx", (128, 128), half=True)
    assert report["dtype"] == "float16" and report["max_rel_error"] <= 1e-2


def test_export_cli_errors_and_no_partial_files(tmp_path, capsys):
    bad = tmp_path / "bad.gel"
    bad.write_text("model m() {\n x = input(3)\n return conv2d(x, -8)\n}\n")
    assert main(["export", str(bad), "--format", "onnx", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "bad.gel:3:" in capsys.readouterr().err
    assert main(["export", str(SPECS / "gelan-t.gel"), "--format", "onnx", "--imgsz", "100",
                 "-o", str(tmp_path / "b.onnx")]) == 2
    assert "not a multiple of the network's largest stride, 32" in capsys.readouterr().err
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # a file where the output's folder should be: unwritable even for root
    code = main(["export", str(SPECS / "gelan-t.gel"), "--format", "torchscript", "--imgsz", "64",
                 "-o", str(blocker / "m.torchscript")])
    assert code == 2 and "cannot write" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gel", "not-a-folder"]

    def failing_check(*a, **k):
        raise RuntimeError("simulated exporter failure")

    import gelanc.backend.export as ex
    monkey = pytest.MonkeyPatch()
    monkey.setattr(ex, "_torchscript", failing_check)
    try:
        with pytest.raises(RuntimeError):
            ex.export(gelanc.compile(SPECS / "gelan-t.gel"), "torchscript", tmp_path / "m.ts", (64, 64))
    finally:
        monkey.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gel", "not-a-folder"]


def test_export_train_graph_needs_train_source(tmp_path, capsys):
    d = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel"))
    gelanc.save(d, tmp_path / "d.pt")
    assert main(["export", str(tmp_path / "d.pt"), "--format", "pt2", "--train"]) == 2
    assert "holds a deploy graph" in capsys.readouterr().err


def test_files_that_run_in_pytorch_keep_channels_last_weights(tmp_path):
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel"))
    report = export(m, "torchscript", tmp_path / "m.torchscript", (64, 64))
    assert report["layout"] == "channels-last"
    loaded = torch.jit.load(str(tmp_path / "m.torchscript"))
    convs = [p for n, p in loaded.named_parameters() if p.dim() == 4 and p.shape[-1] == 3]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert export(m, "onnx", tmp_path / "m.onnx", (64, 64))["layout"] == "default"


# ---- a full disk, and targets that are not ours to replace ----------------------------

TINY = Path(__file__).parent / "specs" / "nobn.gel"  # a small detector: exports in a second


def _tiny():
    return gelanc.deploy(gelanc.compile(TINY, nc=2))


def _onnx_fills_the_disk(net, args, f, **kw):
    """What torch.onnx.export leaves when the disk fills: part of the model, and part of
    its external data beside it."""
    Path(f).write_bytes(b"\x08\x07partial")
    Path(f"{f}.data").write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_on_a_full_disk_keeps_the_previous_file_and_leaves_nothing_beside(fmt, tmp_path, monkeypatch,
                                                                              disk_fills_after):
    from gelanc.atomic import WriteError

    target = tmp_path / f"m.{fmt}"
    target.write_bytes(b"the previous export")
    if fmt == "onnx":
        monkeypatch.setattr(torch.onnx, "export", _onnx_fills_the_disk)
    else:
        disk_fills_after(4096)
    with pytest.raises(WriteError) as e:
        export(_tiny(), fmt, target, (64, 64))
    assert str(e.value) == f"cannot write {target}: {os.strerror(errno.ENOSPC)}"
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m.{fmt}"]


def test_an_export_that_fails_its_check_keeps_the_previous_file(tmp_path, monkeypatch):
    import gelanc.backend.export as ex

    target = tmp_path / "m.torchscript"
    target.write_bytes(b"the previous export")
    monkeypatch.setattr(ex, "_close", lambda a, b, rel: 1.0)  # the file differs from PyTorch
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export(_tiny(), "torchscript", target, (64, 64))
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.torchscript"]


def test_export_cli_on_a_full_disk_is_one_line(tmp_path, capsys, disk_fills_after):
    disk_fills_after(0)
    code = main(["export", str(TINY), "--format", "pt2", "--imgsz", "64", "-o", str(tmp_path / "m.pt2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == f"gelanc: error: cannot write {tmp_path / 'm.pt2'}: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_symlink_is_refused_before_the_work(tmp_path, capsys, monkeypatch):
    import gelanc.backend.export as ex

    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "m.onnx").symlink_to(victim)
    monkeypatch.setattr(ex, "export", lambda *a, **k: pytest.fail("exported to a refused target"))
    assert main(["export", str(TINY), "--format", "onnx", "--imgsz", "64", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert (tmp_path / "m.onnx").is_symlink() and victim.read_text() == "precious"


def _build(out: Path) -> int:
    return main(["build", str(TINY), "-o", str(out), "--set", "nc=2"])


def test_build_on_a_full_disk_writes_none_of_its_files_and_keeps_what_was_there(tmp_path, capsys, monkeypatch,
                                                                                disk_fills_after):
    out = tmp_path / "b"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "nobn.py").write_text("an earlier build")
    disk_fills_after(1000)  # the checkpoint, the last file, fails
    assert _build(out) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out / 'nobn.pt'}: No space left on device" in err
    assert sorted(p.name for p in out.iterdir()) == ["nobn.py", "notes.txt"]
    assert (out / "nobn.py").read_text() == "an earlier build" and (out / "notes.txt").read_text() == "mine"

    monkeypatch.undo()
    assert _build(tmp_path / "new") == 0  # the disk has room again: written whole
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        "nobn.ir.json", "nobn.pt", "nobn.py", "nobn.stats.json"]


def test_build_puts_back_what_it_replaced_when_a_rename_fails(tmp_path, monkeypatch, capsys):
    out = tmp_path / "b"
    out.mkdir()
    earlier = {"nobn.py": "old code", "nobn.ir.json": "old ir", "nobn.stats.json": "old stats"}
    for name, text in earlier.items():
        (out / name).write_text(text)
    real, renamed = os.replace, []

    def replace(src, dst):
        if Path(dst).parent == out and Path(dst).name.startswith("nobn."):
            renamed.append(Path(dst).name)
            if len(renamed) == 3:  # the third file's rename fails (an I/O error, say); putting back works
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    assert _build(out) == 2
    assert "Input/output error" in capsys.readouterr().err
    monkeypatch.undo()
    assert len(renamed) == 5  # two renamed, one failed, two put back
    assert {p.name: p.read_text() for p in out.iterdir()} == earlier  # the two replaced files are back


def test_an_onnx_export_with_external_data_is_refused_not_half_kept(tmp_path, monkeypatch):
    """Weights over 2 GB go to files beside the .onnx: moving the model alone would leave
    a file that names data that is not there."""
    def export_with_external_data(net, args, f, **kw):
        Path(f).write_bytes(b"model")
        Path(f"{f}.data").write_bytes(b"weights")

    monkeypatch.setattr(torch.onnx, "export", export_with_external_data)
    with pytest.raises(RuntimeError, match="external data"):
        export(_tiny(), "onnx", tmp_path / "m.onnx", (64, 64))
    assert list(tmp_path.iterdir()) == []


def test_an_absurd_width_is_a_located_error_before_any_allocation(tmp_path, capsys, monkeypatch):
    from gelanc.backend import fx as torch_fx

    spec = tmp_path / "wide.gel"
    spec.write_text("model wide() {\n    x = input(3)\n    y = conv2d(x, 20000, 3)\n"
                    "    return conv2d(y, 20000, 3)\n}\n")
    monkeypatch.setattr(torch_fx._Builder, "build", lambda *a: pytest.fail("the network was allocated"))
    assert main(["build", str(spec), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "wide.gel:4:12: error: the network would have 3,600,580,000 parameters, over gelanc's limit" in err
    assert not (tmp_path / "out").exists()
    # a model parameter past every bound is refused where it is given, not as an overflow inside torch
    assert main(["build", str(SPECS / "gelan-t.gel"), "--set", f"nc={10**30}", "-o", str(tmp_path / "o")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_export_refuses_a_size_whose_feature_maps_are_over_the_bound(tmp_path, capsys):
    assert main(["export", str(SPECS / "gelan-t.gel"), "--format", "onnx", "--imgsz", "8192",
                 "-o", str(tmp_path / "m.onnx")]) == 2
    assert "8192×8192 is over gelanc's limit of 4096 pixels a side" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


# ---- what the command prints, and refusals before the work ---------------------------


@pytest.mark.parametrize("fmt, extra, name", [
    ("torchscript", [], "m.torchscript"),  # torch.jit's deprecation notices: trace, save, load
    ("pt2", [], "m.bin"),  # torch's note on its packaging; its log line on a name without .pt2
    ("onnx", ["--half"], "m.onnx"),  # the dynamo exporter's "[torch.onnx] …" progress lines, on stdout
])
def test_export_prints_its_own_lines_only(tmp_path, capfd, fmt, extra, name):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # whatever the test runner's filters: every warning issued is caught
        code = main(["export", str(TINY), "--format", fmt, *extra, "--imgsz", "64", "-o", str(tmp_path / name),
                     "--json"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert json.loads(out)["path"] == str(tmp_path / name)  # stdout is the JSON alone
    assert err.splitlines() == [f"exporting nobn (deploy graph) to {fmt}…"], err
    assert [str(w.message) for w in caught] == []


def test_export_under_a_file_is_refused_before_the_model_is_built(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    target = tmp_path / "afile" / "m.onnx"
    # the source does not exist: the output is checked first, so its error is the one reported
    assert main(["export", str(tmp_path / "missing.gel"), "--format", "onnx", "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err == f"gelanc: error: cannot write {target}: {tmp_path / 'afile'} is a file, not a folder\n"
    assert (tmp_path / "afile").read_text() == "mine"


def test_build_into_a_file_names_the_folder_given(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    for out, reason in ((afile, "it is a file"), (afile / "sub", f"{afile} is a file")):
        assert main(["build", str(tmp_path / "missing.gel"), "-o", str(out)]) == 2  # checked before the spec is read
        err = capsys.readouterr().err
        assert err == f"gelanc: error: cannot write {out}: {reason}, not a folder (-o takes a folder)\n"
        assert "batch" not in err
