"""Pictures: real graphviz renders of every zoo model, parsed back."""

import shutil
import xml.etree.ElementTree as ET

import pytest

from gelanc.cli import main
from gelanc.dsl.loader import library_root
from gelanc.passes.deploy import deploy
from gelanc.pipeline import compile_file
from gelanc.tools.viz import render, to_dot, units

SPECS = library_root() / "specs"
ZOO = [f"{f}-{s}" for f in ("gelan", "yolov9") for s in "tsmce"]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz's dot is not installed")
SVG = "{http://www.w3.org/2000/svg}"


def svg_nodes(path):
    """The drawn boxes: (title, class) of each <g class="node ...">."""
    root = ET.parse(path).getroot()
    out = []
    for g in root.iter(f"{SVG}g"):
        cls = g.get("class", "").split()
        if "node" in cls:
            out.append((g.find(f"{SVG}title").text, set(cls) - {"node"}))
    return out


@needs_dot
@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("level", ["block", "op"])
def test_render_every_zoo_model(name, level, tmp_path):
    g = compile_file(SPECS / f"{name}.gel")[0]
    if level == "op" and name.endswith(("-e", "-c", "-m")):
        g = deploy(g)  # the large train graphs take dot a minute each: their deploy graphs suffice
    path, rendered = render(to_dot(g, (640, 640), level), tmp_path / "m.svg")
    assert rendered and path.suffix == ".svg"
    nodes = svg_nodes(path)
    if level == "op":
        assert len(nodes) == g.number_of_nodes()
    else:
        boxes, _, _ = units(g, (640, 640), "block")
        assert len(nodes) == len(boxes)
    aux = {t for t, cls in nodes if "aux" in cls}
    want = {n for n, b in g.nodes(data="branch") if b == "aux"} if level == "op" else \
        {u.id for u in units(g, (640, 640), "block")[0].values() if u.aux}
    assert aux == want
    assert bool(aux) == (name.startswith("yolov9") and g.graph.get("outputs") and len(g.graph["outputs"]) == 2)


def test_block_level_boxes_and_edges():
    g = compile_file(SPECS / "yolov9-c.gel")[0]
    boxes, edges, clusters = units(g, (640, 640), "block")
    assert boxes["elan3"].label == "RepNCSPELAN4" and not boxes["elan3"].aux
    assert boxes["r3"].route and boxes["r3"].aux and boxes["aux_elan3"].aux
    assert not boxes["head"].aux  # the dual head has both halves: drawn as main
    assert edges[("down3", "elan3")] == (256, 80, 80)
    assert ("r5", "CBFuse_2") in edges and clusters == {}
    assert sum(b.cost.params for b in boxes.values()) == 51_182_080


def test_expand_opens_nested_clusters():
    g = compile_file(SPECS / "gelan-t.gel")[0]
    boxes, edges, clusters = units(g, (320, 320), "block", expand=("elan3", "elan3.cv2.0"))
    assert "elan3" not in boxes and "elan3.cv1" in boxes and "elan3.cv2.0.m.1" in boxes
    assert clusters["elan3"] == ("RepNCSPELAN4", "") and clusters["elan3.cv2.0"] == ("RepNCSP", "elan3")
    assert boxes["elan3.cv2.0.m.1"].cluster == "elan3.cv2.0"
    src = to_dot(g, (320, 320), expand=("elan3", "elan3.cv2.0"))
    assert "subgraph cluster_elan3 {" in src and "subgraph \"cluster_elan3.cv2.0\"" in src


@needs_dot
def test_output_is_deterministic(tmp_path):
    g = compile_file(SPECS / "yolov9-t.gel")[0]
    a, _ = render(to_dot(g), tmp_path / "a.svg")
    b, _ = render(to_dot(compile_file(SPECS / "yolov9-t.gel")[0]), tmp_path / "b.svg")
    assert a.read_bytes() == b.read_bytes()


def test_without_dot_writes_dot_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["viz", str(SPECS / "gelan-t.gel"), "-o", str(tmp_path / "m.svg")]) == 0
    assert (tmp_path / "m.dot").read_text().startswith("digraph gelan_t {")
    assert not (tmp_path / "m.svg").exists()
    assert "apt-get install graphviz" in capsys.readouterr().err


def test_viz_cli_errors(tmp_path, capsys):
    assert main(["viz", str(SPECS / "gelan-t.gel"), "--expand", "elan33"]) == 2
    assert "did you mean 'elan3'" in capsys.readouterr().err
    assert main(["viz", str(SPECS / "gelan-t.gel"), "-o", str(tmp_path / "m.jpg")]) == 2
