"""The ops for gates, other activations, norms, learned and bilinear upsampling and
classification heads (issue 14's first steps): each against PyTorch's own function or
module, and its cost against thop 0.1.1's."""

import copy
from pathlib import Path

import pytest
import thop
import torch
import torch.nn.functional as F

import gelanc
from gelanc.diagnostics import GelError
from gelanc.passes.cost import count
from gelanc.passes.deploy import deploy
from gelanc.passes.shapes import check_size, infer
from gelanc.pipeline import graph, program

SE = """
import "zoo/blocks.gel"

block SE(x, r = 4) {
    c = channels(x)
    s = conv2d(relu(conv2d(adaptive_avgpool(x, 1), c // r)), c)
    return x * sigmoid(s)
}
"""

CLASSIFIER = SE + """
model tiny_cls(nc = 10, pooled = 1) {
    x = input(3)
    a = Conv(x, 16, 3, 2)
    b = SE(Conv(a, 32, 3, 2)) as se
    c = leaky_relu(conv2d(b, 64, 3, 2), 0.2)
    d = mish(hardswish(gelu(c)))
    v = dropout(flatten(adaptive_avgpool(d, pooled)), 0.5)
    return softmax(linear(v, nc))
}
"""


# the other new ops with weights or a cost, in one network whose map sizes they change
RESAMPLING = """
import "zoo/blocks.gel"

model resampling() {
    x = input(3)
    a = layernorm(Conv(x, 16, 3, 2))
    b = drop_path(groupnorm(space_to_depth(a, 2), 4), 0.2)
    c = conv_transpose2d(b, 24, 2, 2)
    d = upsample(c, 2, "bilinear")
    return concat(d, upsample(a, 2))
}
"""


def one_op(call: str) -> str:
    return f"model m() {{\n    x = input(3)\n    return {call}\n}}\n"


def error(text: str) -> GelError:
    with pytest.raises(GelError) as e:
        graph(program(text))
    return e.value


@pytest.mark.parametrize("call, reference", [
    ("leaky_relu(x, 0.2)", lambda x: F.leaky_relu(x, 0.2)),
    ("leaky_relu(x)", lambda x: F.leaky_relu(x, 0.1)),  # YOLOv7's slope by default
    ("hardswish(x)", F.hardswish),
    ("gelu(x)", F.gelu),
    ("mish(x)", lambda x: x * torch.tanh(F.softplus(x))),
    ("softmax(x)", lambda x: x.exp() / x.exp().sum(1, keepdim=True)),
    ("adaptive_avgpool(x, 3)", lambda x: torch.nn.AdaptiveAvgPool2d(3)(x)),
    ("adaptive_maxpool(x)", lambda x: x.amax((2, 3), keepdim=True)),
    ("x * adaptive_avgpool(x)", lambda x: x * x.mean((2, 3), keepdim=True)),
    ("adaptive_maxpool(x) * x", lambda x: x.amax((2, 3), keepdim=True) * x),
    ("flatten(adaptive_avgpool(x, 2))", lambda x: F.adaptive_avg_pool2d(x, 2).reshape(len(x), -1)),
    ('upsample(x, 3, "bilinear")', lambda x: F.interpolate(x, scale_factor=3, mode="bilinear", align_corners=False)),
    ("space_to_depth(x, 2)", lambda x: F.pixel_unshuffle(x, 2)),
    ("layernorm(x)", lambda x: (x - x.mean(1, keepdim=True)) / (x.var(1, unbiased=False, keepdim=True) + 1e-6).sqrt()),
    ("groupnorm(x, 3)", lambda x: F.group_norm(x, 3, eps=1e-5)),
    ("drop_path(x, 0.5)", lambda x: x),  # in eval mode
])
@torch.no_grad()
def test_each_op_computes_what_pytorch_does(call, reference):
    x = torch.randn(2, 3, 8, 10)
    m = gelanc.compile(one_op(call)).eval()
    assert torch.allclose(m(x), reference(x), atol=1e-6)


@torch.no_grad()
def test_a_classifier_head_by_hand():
    """softmax(linear(flatten(global average))) on the compiled module's own Linear."""
    torch.manual_seed(2)
    m = gelanc.compile(one_op("softmax(linear(flatten(adaptive_avgpool(x)), 10))").replace("input(3)", "input(16)"))
    m.eval()
    lin = next(mod for mod in m.modules() if isinstance(mod, torch.nn.Linear))
    assert (lin.in_features, lin.out_features) == (16, 10)
    x = torch.randn(2, 16, 10, 6)
    assert torch.allclose(m(x), torch.softmax(x.mean((2, 3)) @ lin.weight.T + lin.bias, 1), atol=1e-6)


def test_gate_by_hand():
    """x * sigmoid(conv(relu(conv(avgpool(x))))) on the compiled module's own convs."""
    torch.manual_seed(1)
    m = gelanc.compile(SE + "model g() {\n    return SE(input(16), 4)\n}\n").eval()
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 4), (4, 16)]
    x = torch.randn(2, 16, 10, 6)
    with torch.no_grad():
        s = torch.sigmoid(convs[1](F.relu(convs[0](x.mean((2, 3), keepdim=True)))))
        assert torch.allclose(m(x), x * s, atol=1e-6)


@torch.no_grad()
def test_a_transposed_convolution_by_hand():
    torch.manual_seed(3)
    m = gelanc.compile(one_op("conv_transpose2d(x, 5, 3, 2, 1)")).eval()
    t = next(mod for mod in m.modules() if isinstance(mod, torch.nn.ConvTranspose2d))
    x = torch.randn(2, 3, 6, 7)
    y = m(x)
    assert y.shape == (2, 5, 11, 13)  # (size − 1) · 2 − 2 + 3
    assert torch.allclose(y, F.conv_transpose2d(x, t.weight, t.bias, stride=2, padding=1), atol=1e-6)


@torch.no_grad()
def test_drop_path_drops_whole_samples_in_training():
    torch.manual_seed(4)
    m = gelanc.compile(one_op("drop_path(x, 0.5)")).train()
    x = torch.rand(64, 3, 4, 4) + 1
    y = m(x)
    kept = [bool((y[i] != 0).all()) for i in range(64)]
    for i in range(64):  # each sample all zero, or all of it kept and scaled by 1 / (1 − p)
        assert torch.equal(y[i], x[i] * 2) if kept[i] else not y[i].any()
    assert 16 < sum(kept) < 48
    assert "drop_path" not in [op for _, op in deploy(graph(program(one_op("drop_path(x, 0.5)")))).nodes(data="op")]


@pytest.mark.parametrize("size", [(224, 224), (56, 72), (40, 40)])
@pytest.mark.parametrize("text, pooled", [(CLASSIFIER, 1), (CLASSIFIER, 3), (RESAMPLING, None)],
                         ids=["classifier", "classifier-3x3", "resampling"])
def test_counts_are_thops_and_the_modules(size, text, pooled):
    """Parameters and MACs of train and deploy graphs equal thop 0.1.1's profile of the
    compiled modules — the adaptive pool's included, where 3 does not divide the map."""
    params = {"pooled": pooled} if pooled else {}
    g = graph(program(text), **params)
    m = gelanc.compile(text, **params).eval()
    # parameters are the module's (thop leaves out those of modules it has no rule for: GroupNorm's)
    macs, _ = thop.profile(copy.deepcopy(m), inputs=(torch.zeros(1, 3, *size),), verbose=False)
    c = count(g, infer(g, size)).total
    assert (c.macs, c.params) == (int(macs), sum(p.numel() for p in m.parameters()))
    d, dg = gelanc.deploy(m).eval(), deploy(g)
    macs, _ = thop.profile(copy.deepcopy(d), inputs=(torch.zeros(1, 3, *size),), verbose=False)
    c = count(dg, infer(dg, size)).total
    assert (c.macs, c.params) == (int(macs), sum(p.numel() for p in d.parameters()))


@torch.no_grad()
def test_dropout_acts_in_training_and_is_gone_for_deploy():
    g = graph(program(CLASSIFIER))
    assert [op for _, op in g.nodes(data="op")].count("dropout") == 1
    assert "dropout" not in [op for _, op in deploy(g).nodes(data="op")]
    torch.manual_seed(0)
    m = gelanc.compile(CLASSIFIER)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    y = m(x)
    assert torch.allclose(gelanc.deploy(m).eval()(x), y, atol=1e-5)
    m.train()
    assert not torch.allclose(m(x), m(x))  # a different mask each call


def test_a_map_pooled_to_a_fixed_size_has_no_stride():
    """The classifier's largest stride is its backbone's 8: sizes that 8 divides pass, the
    global pool's 1×1 (and the gate's maps) take no part."""
    g = graph(program(CLASSIFIER))
    for ok in ((224, 224), (64, 48)):
        check_size(g, ok)
    with pytest.raises(GelError, match="largest stride, 8"):
        check_size(g, (228, 228))


def test_shape_errors_name_the_argument():
    e = error(one_op("linear(x, 10)"))
    assert "linear of 3×?×?: it takes a vector (flatten the map first)" in e.message
    e = error(one_op("flatten(x)"))
    assert "its spatial size is not fixed; pool it to a fixed size first" in e.message
    e = error(SE + one_op("x * conv2d(adaptive_avgpool(x), 4)"))
    assert "mul of 3×?×? and 4×1×1: sizes 3 and 4 neither agree nor are 1" in e.message
    assert e.span is not None and e.span.line == SE.count("\n") + 3  # the model's return statement
    e = error(one_op("x * flatten(adaptive_avgpool(x))"))
    assert "a map and a vector do not broadcast" in e.message
    e = error(one_op("leaky_relu(x, -1)"))
    assert "slope" in e.message
    e = error(one_op("dropout(x, 1)"))
    assert "argument 'p'" in e.message
    e = error(one_op("groupnorm(x, 2)"))
    assert "groupnorm: 2 groups do not divide 3 channels" in e.message
    e = error(one_op('upsample(x, 2, "bicubic")'))
    assert "argument 'mode'" in e.message
    g = graph(program(one_op("space_to_depth(x, 4)")))
    with pytest.raises(GelError, match="space_to_depth by 4 of 3×38×40: 38 is not a multiple of 4"):
        infer(g, (38, 40), check_stride=False)


def test_a_tensor_times_a_number_is_still_an_error():
    e = error('import "zoo/blocks.gel"\n' + one_op("Conv(x, 8) * 2"))
    assert "operator * is not defined for tensors (+ adds them, * multiplies them)" in e.message


@torch.no_grad()
def test_the_language_docs_example_of_a_gate_and_a_head_compiles_and_runs():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text()
    section = docs[docs.index("**Gates, heads, norms.**"):]
    blocks = section[section.index("```\n") + 4:section.index("\n```", section.index("```\n") + 4)]
    text = 'import "zoo/blocks.gel"\n' + blocks + (
        "\nmodel m() {\n    return ClassifyHead(SE(Conv(input(3), 32, 3, 2, act = leaky_relu)), 10, 0.1)\n}\n")
    m = gelanc.compile(text).eval()
    y = m(torch.rand(2, 3, 64, 48))
    assert y.shape == (2, 10) and torch.allclose(y.sum(1), torch.ones(2))
