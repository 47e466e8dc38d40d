"""The IR passes: PGI removal, BN folding, RepConvN merging, shapes, validation."""

import networkx as nx
import pytest

from gelanc.diagnostics import GelError
from gelanc.dsl.loader import library_root, load_text
from gelanc.ir.graph import Ref, add_node, inputs, new_graph
from gelanc.ir.lower import lower
from gelanc.ops import REGISTRY
from gelanc.passes.cost import count
from gelanc.passes.deploy import deploy, fold_bn, merge_parallel_convs, strip_aux
from gelanc.passes.shapes import infer, max_stride
from gelanc.passes.validate import validate
from gelanc.pipeline import compile_file
from gelanc.stats import model_stats

SPECS = library_root() / "specs"


def graph(name):
    return compile_file(SPECS / f"{name}.gel")[0]


def same_op(a, b):
    return a["op"] == b["op"] and a["attrs"] == b["attrs"]


@pytest.mark.parametrize("size", ["t", "s", "m", "c", "e"])
def test_pgi_removal_gives_exactly_gelan(size):
    """yolov9-X without its aux branch, fused, is gelan-X fused: same ops, attributes, wiring."""
    y, g = deploy(graph(f"yolov9-{size}")), deploy(graph(f"gelan-{size}"))
    assert y.number_of_nodes() == g.number_of_nodes()
    assert nx.is_isomorphic(y, g, node_match=same_op, edge_match=lambda a, b: a["uses"] == b["uses"])


def test_isomorphism_check_can_fail():
    """The comparison above is not vacuous: a different width breaks it."""
    c, m = deploy(graph("gelan-c")), deploy(graph("yolov9-c"))
    n = next(n for n, d in m.nodes(data=True) if d["op"] == "conv2d")
    m.nodes[n]["attrs"] = m.nodes[n]["attrs"].model_copy(update={"c2": m.nodes[n]["attrs"].c2 + 8})
    assert not nx.is_isomorphic(c, m, node_match=same_op, edge_match=lambda a, b: a["uses"] == b["uses"])


def test_strip_aux_removes_exactly_the_aux_branch():
    g = graph("yolov9-c")
    s = strip_aux(g)
    assert {b for _, b in s.nodes(data="branch")} == {"main"}
    assert s.number_of_nodes() == sum(1 for _, b in g.nodes(data="branch") if b == "main")
    assert len(s.graph["outputs"]) == 1 and len(g.graph["outputs"]) == 2
    validate(s)


def test_fold_bn_and_merge_on_repconv():
    prog = load_text('import "zoo/blocks.gel"\nmodel m() { x = input(8)\n return RepConvN(x, 16) }', "t.gel")
    g = lower(prog)
    assert sorted(d["op"] for _, d in g.nodes(data=True)) == sorted(
        ["input", "conv2d", "batchnorm", "conv2d", "batchnorm", "add", "silu"])
    f = fold_bn(g)
    assert [d["op"] for _, d in f.nodes(data=True)].count("batchnorm") == 0
    assert all(d["attrs"].bias for _, d in f.nodes(data=True) if d["op"] == "conv2d")
    m = merge_parallel_convs(f)
    ops = [d["op"] for _, d in m.nodes(data=True)]
    assert ops == ["input", "conv2d", "silu"]
    conv = next(d for _, d in m.nodes(data=True) if d["op"] == "conv2d")
    assert (conv["attrs"].k, conv["attrs"].bias) == (3, True)
    assert conv["folds"] == (("RepConvN.conv1.conv", "RepConvN.conv1.bn"), ("RepConvN.conv2.conv", "RepConvN.conv2.bn"))
    # 3×3 + 1×1 + 2 BN (16×8×9 + 16×8 + 4×16) → one 3×3 with bias (16×8×9 + 16)
    sh = infer(m, (32, 32))
    assert count(m, sh).total.params == 16 * 8 * 9 + 16
    assert count(g, infer(g, (32, 32))).total.params == 16 * 8 * 9 + 16 * 8 + 4 * 16


def test_merge_leaves_other_adds_alone():
    """A residual add (conv + its input) is not a RepConvN pattern."""
    prog = load_text('model m() { x = input(8)\n y = conv2d(x, 8, 3)\n return x + y }', "t.gel")
    g = lower(prog)
    assert merge_parallel_convs(g).number_of_nodes() == g.number_of_nodes()


@pytest.mark.parametrize("size", [(320, 320), (640, 640), (1280, 1280), (384, 640), (640, 384)])
def test_shapes_at_many_sizes(size):
    g = graph("yolov9-c")
    shapes = infer(g, size)
    h, w = size
    (main, aux) = g.graph["outputs"]
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert shapes[main.node][0] == (84, anchors)
    assert shapes[aux.node][0] == (84, anchors)
    assert shapes["p3.cv4.conv"][0] == (256, h // 8, w // 8)


def test_flops_scale_with_area():
    g = graph("gelan-c")
    a = count(g, infer(g, (320, 320))).total
    b = count(g, infer(g, (640, 640))).total
    assert a.params == b.params
    assert b.macs == pytest.approx(4 * a.macs, rel=1e-4)


@pytest.mark.parametrize("size", [(100, 100), (640, 636), (16, 16)])
def test_size_not_multiple_of_stride_is_a_located_error(size):
    g = graph("gelan-c")
    with pytest.raises(GelError) as e:
        infer(g, size)
    assert "largest stride, 32" in e.value.message
    assert e.value.span.file.endswith("gelan-c.gel") and e.value.span.line == 5  # x = input(3)


def test_max_stride():
    assert max_stride(graph("gelan-t"))[0] == 32


def test_table2_ablation_counts_beside_paper():
    """The four GELAN-S ablation specs land within 1% of the paper's Table 2."""
    rows = {v: model_stats(compile_file(SPECS / f"gelan-s-{v}.gel")[0]) for v in ("conv", "res", "dark", "csp")}
    for v, r in rows.items():
        assert r["deploy"]["params"] == pytest.approx(r["paper"]["params"], rel=0.01), v
        assert r["deploy"]["gflops"] == pytest.approx(r["paper"]["gflops"], rel=0.01), v
    # the four files are one text but for the block's name and the paper's figures
    import re
    blocks = {"conv": "ConvStack", "res": "ResStack", "dark": "DarkStack", "csp": "RepNCSP"}
    norm = {re.sub(r"paper \{[^}]*\}", "paper {}", (SPECS / f"gelan-s-{v}.gel").read_text())
            .replace(blocks[v], "CB").replace(f"gelan_s_{v}", "NAME") for v in rows}
    assert len(norm) == 1


# ---- validation of hand-built IR (what lowering cannot produce) --------------------


def _tiny():
    g = new_graph("tiny")
    A = REGISTRY["conv2d"].attrs
    add_node(g, "x", "input", REGISTRY["input"].attrs(channels=3), [], branch="main")
    add_node(g, "a", "conv2d", A(c2=8, k=3), [Ref("x")], branch="main")
    add_node(g, "b", "conv2d", A(c2=8, k=3), [Ref("a")], branch="main")
    g.graph["outputs"] = [Ref("b")]
    return g


def test_validate_accepts_tiny_graph():
    validate(_tiny())


def test_validate_finds_cycle():
    """Each graph below is well formed but for its cycle (every arity and position right),
    so only the cycle check can refuse it."""
    g = _tiny()
    g.remove_edge("x", "a")
    g.add_edge("b", "a", uses=((0, 0),))  # a ⇄ b; x is left unread, which is checked after cycles
    with pytest.raises(GelError, match="cycle in the graph: "):
        validate(g)
    g = _tiny()
    add_node(g, "c", "add", REGISTRY["add"].attrs(), [Ref("b"), Ref("b")], branch="main")
    g.add_edge("c", "a", uses=((0, 0),))
    g.remove_edge("x", "a")
    with pytest.raises(GelError, match="cycle in the graph: "):
        validate(g)


def test_validate_finds_gaps_in_argument_positions():
    """An add whose two inputs sit at positions 0 and 2: the arity is right, the call is not."""
    g = _tiny()
    add_node(g, "c", "add", REGISTRY["add"].attrs(), [Ref("a"), Ref("b")], branch="main")
    g.edges["b", "c"]["uses"] = ((2, 0),)
    g.graph["outputs"] = [Ref("c")]
    with pytest.raises(GelError, match="gaps in its argument positions"):
        validate(g)
    g.edges["b", "c"]["uses"] = ((1, 0),)
    validate(g)


@pytest.mark.parametrize("size", [8, 10, 14])
@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pool_shape_honours_ceil_mode(op, size):
    """The pooling shape rule against PyTorch's own output, floor and ceil (sizes the stride
    divides, as an input must be, where a 3-window at stride 2 leaves an odd remainder)."""
    import torch

    for ceil in (False, True):
        prog = load_text(f"model m() {{ x = input(4)\n return {op}(x, 3, 2, 0, ceil_mode = {str(ceil).lower()}) }}",
                         "t.gel")
        g = lower(prog)
        shapes = infer(g, (size, size + 2))
        pool = getattr(torch.nn, {"maxpool": "MaxPool2d", "avgpool": "AvgPool2d"}[op])(3, 2, 0, ceil_mode=ceil)
        want = tuple(pool(torch.zeros(1, 4, size, size + 2)).shape[1:])
        assert shapes[g.graph["outputs"][0].node][0] == want, (op, size, ceil)


def test_make_divisible_rounds_up_to_the_divisor():
    """The reference's make_divisible (math.ceil(x / d) * d), through a spec's widths."""
    import math

    for x, d in ((30, 8), (32, 8), (33.5, 8), (100 * 0.25, 8), (7, 16)):
        prog = load_text(f"model m() {{ x = input(3)\n return conv2d(x, make_divisible({x}, {d}), 1) }}", "t.gel")
        g = lower(prog)
        conv = next(a for _, op, a in ((n, d_["op"], d_["attrs"]) for n, d_ in g.nodes(data=True)) if op == "conv2d")
        assert conv.c2 == math.ceil(x / d) * d and conv.c2 % d == 0 and conv.c2 >= x


def test_validate_finds_dead_node_and_aux_feeding_main():
    g = _tiny()
    add_node(g, "dead", "silu", REGISTRY["silu"].attrs(), [Ref("a")], branch="main")
    with pytest.raises(GelError, match="never used"):
        validate(g)
    g = _tiny()
    g.nodes["a"]["branch"] = "aux"
    with pytest.raises(GelError, match="aux"):
        validate(g)


def test_validate_finds_channel_mismatch():
    g = _tiny()
    add_node(g, "s", "add", REGISTRY["add"].attrs(), [Ref("x"), Ref("b")], branch="main")
    g.graph["outputs"] = [Ref("s")]
    with pytest.raises(GelError, match="channel counts differ"):
        validate(g)


def test_edges_keep_argument_order_and_repeats():
    g = _tiny()
    add_node(g, "c", "concat", REGISTRY["concat"].attrs(), [Ref("b"), Ref("a"), Ref("b")], branch="main")
    assert inputs(g, "c") == [Ref("b"), Ref("a"), Ref("b")]
    assert infer(g, None)["c"] == [(24, None, None)]


@pytest.mark.parametrize("size, k", [(2, 3), (1, 3), (4, 5), (3, 5)])
def test_a_window_that_does_not_fit_is_a_located_error(size, k):
    """A k×k window without padding over a smaller map has no output (PyTorch refuses it):
    an output of exactly 0 as much as a negative one."""
    g = lower(load_text(f"model m() {{ x = input(3)\n return conv2d(x, 8, {k}, p = 0) }}", "t.gel"))
    with pytest.raises(GelError, match=f"a {k}×{k} window with stride 1 and padding 0 does not fit in size {size}"):
        infer(g, (size, size))
    infer(g, (k, k))  # the window just fits: a 1×1 output


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_upsample_shape_and_cost_follow_its_scale(scale):
    """The zoo only upsamples by 2: other factors, against PyTorch's own output shape."""
    import torch

    g = lower(load_text(f"model m() {{ x = input(5)\n return upsample(x, {scale}) }}", "t.gel"))
    shapes = infer(g, (8, 12))
    out = g.graph["outputs"][0].node
    want = tuple(torch.nn.Upsample(scale_factor=scale)(torch.zeros(1, 5, 8, 12)).shape[1:])
    assert shapes[out][0] == want
    assert count(g, shapes).total.macs == 5 * 8 * scale * 12 * scale  # thop: one op per output element


def test_validate_refuses_more_inputs_than_an_op_takes():
    """A conv (one input) given a second at the next position: the positions have no gap
    and the shape rule reads only the first, so the arity check alone can refuse it."""
    g = _tiny()
    g.add_edge("x", "b", uses=((1, 0),))
    with pytest.raises(GelError, match="conv2d node 'b' has 2 inputs; it takes 1"):
        validate(g)


def test_batchnorm_is_not_folded_into_a_conv_that_something_else_reads():
    """Folding would change what the other reader sees: the BatchNorm stays."""
    g = lower(load_text("model m() { x = input(3)\n c = conv2d(x, 8, 3, bias = false)\n"
                        " return batchnorm(c) + c }", "t.gel"))
    ops = sorted(d["op"] for _, d in fold_bn(g).nodes(data=True))
    assert ops == ["add", "batchnorm", "conv2d", "input"]
    alone = lower(load_text("model m() { x = input(3)\n return batchnorm(conv2d(x, 8, 3, bias = false)) }", "t.gel"))
    assert sorted(d["op"] for _, d in fold_bn(alone).nodes(data=True)) == ["conv2d", "input"]  # its sole reader
