"""Weights in the reference's layout: export, import, and a reference-pickled checkpoint."""

import json
import sys
import types

import pytest
import torch
from torch import nn

import gelanc
from gelanc.cli import main
from gelanc.dsl.loader import builtin_specs, library_root
from gelanc.interop.refweights import WeightsError, export_reference, load_reference

SPECS = library_root() / "specs"
ZOO = [p for p in builtin_specs() if not p.stem.startswith("gelan-s-")]


@torch.no_grad()
def _outputs(m, size=64):
    return m.eval()(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))[0]


@pytest.mark.parametrize("spec", ZOO, ids=lambda p: p.stem)
@torch.no_grad()
def test_export_then_import_gives_identical_outputs(spec):
    torch.manual_seed(0)
    a = gelanc.compile(spec, nc=5)
    for mod in a.modules():  # BatchNorm statistics that are not the identity
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    torch.manual_seed(1)
    b = gelanc.compile(spec, nc=5)
    load_reference(b, export_reference(a))
    assert torch.equal(_outputs(a), _outputs(b))


def test_the_reference_numbers_layers_as_its_yamls_do():
    """Indices as in WongKinYiu/yolov9's models/detect/*.yaml: the detection head is the last layer,
    after a Silence layer 0 where more than one layer reads the image."""
    last = {"gelan-c": 22, "gelan-e": 42, "yolov9-c": 38, "yolov9-s": 29}
    for name, index in last.items():
        state = export_reference(gelanc.compile(SPECS / f"{name}.gel"))
        layers = sorted({int(k.split(".")[1]) for k in state})
        assert layers[-1] == index and state[f"model.{index}.dfl.conv.weight"].shape == (1, 16, 1, 1)
        assert (layers[0] == 1) == (name in ("gelan-e", "yolov9-c"))


def test_weights_of_another_model_are_refused_with_the_layer_named():
    state = export_reference(gelanc.compile(SPECS / "gelan-t.gel"))
    with pytest.raises(WeightsError, match="has no layer for stem1"):
        load_reference(gelanc.compile(SPECS / "gelan-s.gel"), state)


def _reference_model(state: dict[str, torch.Tensor], layers: str = "models.common", root_module: str = "models.yolo"):
    """A module tree shaped as the reference's: DetectionModel.model = Sequential of layers
    of classes under ``layers`` (models.common), each holding the given tensors under
    their names; the DetectionModel under ``root_module``. Returns it and the stand-in
    modules to put in sys.modules while pickling."""
    common = types.ModuleType(layers)
    yolo = types.ModuleType(root_module)

    class Node(nn.Module):
        pass

    class DetectionModel(nn.Module):
        pass

    Node.__module__, Node.__qualname__ = layers, "Node"
    DetectionModel.__module__, DetectionModel.__qualname__ = root_module, "DetectionModel"
    common.Node, yolo.DetectionModel = Node, DetectionModel
    root = DetectionModel()
    root.model = nn.Sequential(*[Node() for _ in range(1 + max(int(k.split(".")[1]) for k in state))])
    for key, t in state.items():
        *path, leaf = key.split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, Node())
            m = getattr(m, part)
        if leaf in ("running_mean", "running_var", "num_batches_tracked"):
            m.register_buffer(leaf, t.clone())
        else:
            m.register_parameter(leaf, nn.Parameter(t.clone(), requires_grad=t.is_floating_point()))
    root.yaml = {"nc": 3, "depth_multiple": 1.0}
    root.names = {0: "cat", 1: "dog", 2: "kite"}
    parents = {name.rsplit(".", i)[0] for name in (layers, root_module) for i in range(1, name.count(".") + 1)}
    return root, {**{p: types.ModuleType(p) for p in parents}, layers: common, root_module: yolo}


def test_a_reference_pickled_checkpoint_imports_by_structure(tmp_path, capsys):
    torch.manual_seed(0)
    want = gelanc.compile(SPECS / "yolov9-t.gel", nc=3)
    model, fake = _reference_model(export_reference(want))
    sys.modules.update(fake)
    try:
        path = tmp_path / "yolov9-t.pt"
        torch.save({"model": None, "ema": model.half(), "epoch": 3, "opt": {"hyp": "x"}}, path)
    finally:
        for k in fake:
            sys.modules.pop(k, None)
    out = tmp_path / "imported.pt"
    code = main(["import-weights", str(path), "--spec", str(SPECS / "yolov9-t.gel"), "-o", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(stdout)["dropped_layers"] == []
    got = gelanc.load(out)
    assert got.meta["gelanc"]["ir"].graph["params"]["nc"] == 3  # from the checkpoint's yaml
    # the reference stores half precision: compare with the same tensors rounded so
    for v in want.state_dict().values():
        if v.is_floating_point():
            v.copy_(v.half().float())
    assert torch.equal(_outputs(got), _outputs(want))
    assert torch.load(out, weights_only=True)["names"] == ["cat", "dog", "kite"]


def test_export_weights_cli_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    m = gelanc.compile(SPECS / "gelan-t.gel", nc=2)
    gelanc.save(m, tmp_path / "m.pt")
    assert main(["export-weights", str(tmp_path / "m.pt"), "-o", str(tmp_path / "ref.pt")]) == 0
    state = torch.load(tmp_path / "ref.pt", weights_only=True)
    assert all(k.startswith("model.") for k in state)
    assert main(["import-weights", str(tmp_path / "ref.pt"), "--spec", str(SPECS / "gelan-t.gel"), "--set", "nc=2",
                 "-o", str(tmp_path / "back.pt")]) == 0
    assert torch.equal(_outputs(gelanc.load(tmp_path / "back.pt")), _outputs(m))
    gelanc.save(gelanc.deploy(m), tmp_path / "d.pt")
    capsys.readouterr()
    assert main(["export-weights", str(tmp_path / "d.pt"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "deploy graph" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["t", "s", "m", "c", "e"])
@torch.no_grad()
def test_a_yolov9_checkpoint_imported_against_gelan_keeps_the_main_branch(size):
    """What the reference does by hand in a notebook: a yolov9 train checkpoint onto the
    gelan spec — aux layers left out, the dual head's main half as the gelan head."""
    torch.manual_seed(0)
    yolov9 = gelanc.compile(SPECS / f"yolov9-{size}.gel", nc=5)
    gelan = gelanc.compile(SPECS / f"gelan-{size}.gel", nc=5)
    load_reference(gelan, export_reference(yolov9))
    assert torch.equal(_outputs(gelan), _outputs(yolov9))  # eval: the main head's predictions
    imported = gelan.meta["gelanc"]["imported"]
    assert imported["dropped"]  # the aux branch's layers
    from gelanc.backend.fx import ir_of
    from gelanc.interop.refweights import units

    g = ir_of(yolov9)
    aux = {u.name for u in units(yolov9) if u.tensors and u.name != "head"
           and all(g.nodes[n]["branch"] == "aux" for n in g if n == u.name or n.startswith(u.name + "."))}
    assert len(imported["dropped"]) == len(aux) > 0


def test_an_ultralytics_checkpoint_imports_onto_its_converted_yaml(tmp_path, capsys):
    """ultralytics pickles its own classes (ultralytics.nn.tasks.DetectionModel, …) under
    the same model.N layout: a checkpoint of ultralytics' yolov9t imports onto the spec
    that import-yaml makes of its YAML."""
    from test_refyaml import _ultralytics_v9

    yaml_path = tmp_path / "yolov9t.yaml"
    yaml_path.write_text(_ultralytics_v9("t"))
    spec = tmp_path / "yolov9t.gel"
    assert main(["import-yaml", str(yaml_path), "-o", str(spec)]) == 0
    torch.manual_seed(0)
    want = gelanc.compile(spec, nc=3)
    model, fake = _reference_model(export_reference(want), "ultralytics.nn.modules.block", "ultralytics.nn.tasks")
    sys.modules.update(fake)
    try:
        path = tmp_path / "best.pt"
        torch.save({"epoch": -1, "best_fitness": None, "model": None, "ema": model.half(), "updates": 100,
                    "optimizer": None, "train_args": {"imgsz": 640, "epochs": 100}, "date": "2026-01-01T00:00:00",
                    "version": "8.3.0"}, path)
    finally:
        for k in fake:
            sys.modules.pop(k, None)
    out = tmp_path / "imported.pt"
    capsys.readouterr()
    assert main(["import-weights", str(path), "--spec", str(spec), "-o", str(out)]) == 0, capsys.readouterr().err
    for v in want.state_dict().values():
        if v.is_floating_point():
            v.copy_(v.half().float())
    assert torch.equal(_outputs(gelanc.load(out)), _outputs(want))
