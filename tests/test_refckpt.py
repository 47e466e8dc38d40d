"""Reading the reference's checkpoints: records, not its classes; nothing run from the file."""

import os
import sys
import types

import pytest
import torch
from torch import nn

from gelanc.interop import refckpt
from gelanc.interop.refckpt import Record, UnsafePickle


@pytest.fixture
def reference_classes():
    """Stand-ins for the reference's module paths (models.common.Conv, models.yolo.DetectionModel),
    present while a test pickles with them and gone when it reads the file back."""
    models = types.ModuleType("models")
    common = types.ModuleType("models.common")
    yolo = types.ModuleType("models.yolo")

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=3):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class DetectionModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(Conv(3, 8), Conv(8, 16, 1))
            self.yaml = {"nc": 80, "depth_multiple": 1.0}
            self.names = ["a", "b"]

    Conv.__module__, Conv.__qualname__ = "models.common", "Conv"
    DetectionModel.__module__, DetectionModel.__qualname__ = "models.yolo", "DetectionModel"
    common.Conv, yolo.DetectionModel = Conv, DetectionModel
    models.common, models.yolo = common, yolo
    saved = {k: sys.modules.get(k) for k in ("models", "models.common", "models.yolo")}
    sys.modules.update({"models": models, "models.common": common, "models.yolo": yolo})

    def forget():
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v

    yield DetectionModel, forget
    forget()


def test_a_reference_checkpoint_reads_as_records_without_its_classes(reference_classes, tmp_path):
    DetectionModel, forget = reference_classes
    torch.manual_seed(0)
    model = DetectionModel()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "yolov9-x.pt"
    torch.save({"model": model.half(), "ema": None, "epoch": -1, "best_fitness": None,
                "opt": {"weights": "", "epochs": 500}}, path)
    forget()  # the reference's code is not there when gelanc reads the file
    assert "models.yolo" not in sys.modules

    ckpt = refckpt.read(path)
    m = refckpt.model_of(ckpt)
    assert isinstance(m, Record) and m.cls_path == "models.yolo.DetectionModel"
    assert m.state["names"] == ["a", "b"] and ckpt["opt"]["epochs"] == 500
    got = refckpt.tensors(m)
    assert set(got) == set(expected)
    for k, v in expected.items():
        want = v.half().float() if v.is_floating_point() else v  # stored in half precision, as the reference does
        assert torch.equal(got[k], want), k
    assert got["model.0.conv.weight"].dtype == torch.float32
    assert "models.yolo" not in sys.modules  # nothing imported it


class _System:
    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('touch ' + flag)",))


@pytest.mark.parametrize("payload, named", [(_System, "posix.system"), (_Eval, "builtins.eval")])
def test_a_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path, payload, named):
    flag = tmp_path / "pwned"
    obj = payload()
    obj.flag = flag
    path = tmp_path / "evil.pt"
    torch.save({"model": obj}, path)
    with pytest.raises(UnsafePickle, match=named):
        refckpt.read(path)
    assert not flag.exists()


def test_callables_inside_torch_are_refused_too(tmp_path):
    class Loader:
        def __reduce__(self):
            return (torch.load, (str(tmp_path / "other.pt"),))

    path = tmp_path / "sneaky.pt"
    torch.save({"model": Loader()}, path)
    with pytest.raises(UnsafePickle, match="torch.serialization.load"):
        refckpt.read(path)


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(refckpt.CheckpointError, match="not a readable checkpoint"):
        refckpt.read(bad)
    with pytest.raises(refckpt.CheckpointError, match="no such checkpoint"):
        refckpt.read(tmp_path / "missing.pt")
