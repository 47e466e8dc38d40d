"""`gelanc build` and `gelanc export`: files written, checked, and nothing half-written."""

import json

import pytest
import torch

import gelanc
from gelanc.cli import main
from gelanc.dsl.loader import library_root
from gelanc.export import export

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

    import gelanc.export as ex
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
