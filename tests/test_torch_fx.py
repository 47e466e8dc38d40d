"""The torch stage: compiled modules match the IR's counts, shapes and deploy exactly."""

import copy
import gc

import pytest
import thop
import torch

import gelanc
from gelanc.backend.fx import ir_of
from gelanc.dsl.loader import library_root
from gelanc.passes.cost import count
from gelanc.passes.deploy import deploy
from gelanc.passes.shapes import infer
from gelanc.pipeline import compile_file

SPECS = library_root() / "specs"
ZOO = [f"{f}-{s}" for f in ("gelan", "yolov9") for s in "tsmce"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def randomise_bn(m, seed=0):
    """Random BatchNorm statistics and affine terms, so folding them is really tested."""
    gen = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=gen) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(c, generator=gen) - 0.5)


@pytest.mark.parametrize("name", ZOO)
@torch.no_grad()
def test_compiled_module_matches_ir(name):
    """Parameters equal the IR's (train and deploy), thop's MACs equal the IR's, deploy
    gives the train module's predictions, for every zoo model."""
    torch.manual_seed(0)
    g = compile_file(SPECS / f"{name}.gel")[0]
    size = (128, 160)
    m = gelanc.compile(SPECS / f"{name}.gel").eval()
    randomise_bn(m)
    assert n_params(m) == count(g, infer(g, size)).total.params

    macs, params = thop.profile(copy.deepcopy(m), inputs=(torch.zeros(1, 3, *size),), verbose=False)
    assert (int(macs), int(params)) == (count(g, infer(g, size)).total.macs, n_params(m))

    d = gelanc.deploy(m).eval()
    dg = deploy(g)
    assert n_params(d) == count(dg, infer(dg, size)).total.params
    macs, _ = thop.profile(copy.deepcopy(d), inputs=(torch.zeros(1, 3, *size),), verbose=False)
    assert int(macs) == count(dg, infer(dg, size)).total.macs

    x = torch.rand(2, 3, *size)
    y, yd = m(x)[0], d(x)[0]
    a = (128 // 8) * (160 // 8) + (128 // 16) * (160 // 16) + (128 // 32) * (160 // 32)
    assert y.shape == yd.shape == (2, 84, a)
    scale = y.abs().max()
    assert (y - yd).abs().max() <= 1e-4 * scale
    del m, d
    gc.collect()


@pytest.mark.parametrize("size", [(320, 320), (640, 640), (256, 416)])
@torch.no_grad()
def test_output_shapes_train_and_eval(size):
    m = gelanc.compile(SPECS / "yolov9-t.gel", nc=5)
    h, w = size
    x = torch.zeros(1, 3, h, w)
    main, aux = m.train()(x)
    levels = [(h // s, w // s) for s in (8, 16, 32)]
    for maps in (main, aux):
        assert [tuple(t.shape) for t in maps] == [(1, 64 + 5, *hw) for hw in levels]
    y, (main_maps, aux_maps) = m.eval()(x)
    assert y.shape == (1, 4 + 5, sum(a * b for a, b in levels))
    assert len(main_maps) == len(aux_maps) == 3
    # a model without aux returns the reference's shapes: maps in train, (y, maps) in eval
    g = gelanc.compile(SPECS / "gelan-t.gel", nc=5)
    assert len(g.train()(x)) == 3
    y, maps = g.eval()(x)
    assert y.shape == (1, 9, sum(a * b for a, b in levels)) and len(maps) == 3


@torch.no_grad()
def test_decode_is_xywh_in_pixels():
    """With the box logits forcing every DFL distance to 0 bins, boxes are zero-size at the
    anchor centres: (i + 0.5) · stride."""
    m = gelanc.compile(SPECS / "gelan-t.gel", nc=2).eval()
    det = dict(m.named_modules())["head.dfl"]
    maps = [torch.zeros(1, 64 + 2, 4, 4)]
    maps[0][:, :64].view(1, 4, 16, 16)[:, :, 0] = 50.0  # all mass on bin 0 → distance 0
    det.strides = [8.0]
    y, _ = det(*maps)
    xy = y[0, :2].T.reshape(4, 4, 2)
    assert torch.allclose(xy[0, 0], torch.tensor([4.0, 4.0]))
    assert torch.allclose(xy[2, 3], torch.tensor([3.5 * 8, 2.5 * 8]))
    assert torch.allclose(y[0, 2:4], torch.zeros(2, 16), atol=1e-4)
    assert torch.allclose(y[0, 4:], torch.full((2, 16), 0.5))


def test_initialisation_as_the_reference():
    m = gelanc.compile(SPECS / "gelan-c.gel", nc=80)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 and b.momentum == 0.03 for b in bns)
    mods = dict(m.named_modules())
    import math
    for level, stride in zip(range(3), (8, 16, 32)):
        assert torch.all(mods[f"head.cv2.{level}.2"].bias == 1.0)
        assert torch.allclose(mods[f"head.cv3.{level}.2"].bias,
                              torch.full((80,), math.log(5 / 80 / (640 / stride) ** 2)))
    assert mods["head.dfl"].conv.weight.flatten().tolist() == list(range(16))


def test_state_dict_keys_follow_scopes():
    m = gelanc.compile(SPECS / "gelan-c.gel")
    keys = set(m.state_dict())
    assert "elan3.cv2.0.m.0.cv1.conv1.conv.weight" in keys
    assert "head.cv3.2.2.bias" in keys and "head.dfl.conv.weight" in keys
    assert "def forward(self, x):" in m.code and "elan3_cv1_conv" in m.code


def test_compile_from_text_and_params():
    m = gelanc.compile('import "zoo/blocks.gel"\nmodel tiny(c: int = 8) {\n x = input(3)\n'
                       ' return Conv(x, c, 3, 2)\n}', c=16)
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 16, 16, 16)
    assert ir_of(m).graph["params"] == {"c": 16}


def test_compile_bad_spec_raises_located_error(tmp_path):
    from gelanc.diagnostics import GelError

    bad = tmp_path / "bad.gel"
    bad.write_text('model m() {\n x = input(3)\n return conv2d(x, 0)\n}\n')
    with pytest.raises(GelError) as e:
        gelanc.compile(bad)
    assert e.value.span.line == 3


def test_torch_compile_export_and_channels_last():
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel", nc=3)).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ref = m(x)[0]
        cl = copy.deepcopy(m).to(memory_format=torch.channels_last)
        assert torch.allclose(cl(x.to(memory_format=torch.channels_last))[0], ref, atol=1e-4)
        ep = torch.export.export(m, (x,))
        assert torch.allclose(ep.module()(x)[0], ref, atol=1e-4)


def test_same_seed_same_weights():
    """Weights are drawn in a background thread, in creation order: still reproducible."""
    torch.manual_seed(123)
    a = gelanc.compile(SPECS / "gelan-s.gel").state_dict()
    torch.manual_seed(123)
    b = gelanc.compile(SPECS / "gelan-s.gel").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = gelanc.compile(SPECS / "gelan-s.gel").state_dict()
    assert not torch.equal(a["stem1.conv.weight"], c["stem1.conv.weight"])


def test_torch_compile_captures_whole_graph():
    """Dynamo traces the modules without a graph break, in eval and in training (CI has
    no GPU; `aot_eager` runs the captured graphs through autograd without inductor)."""
    x = torch.rand(1, 3, 64, 96)
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel", nc=3)).eval()
    with torch.no_grad():
        assert torch.allclose(torch.compile(m, backend="aot_eager", fullgraph=True)(x)[0], m(x)[0], atol=1e-5)
    t = gelanc.compile(SPECS / "yolov9-t.gel", nc=3).train()
    main, aux = torch.compile(t, backend="aot_eager", fullgraph=True)(x)
    sum(o.sum() for o in [*main, *aux]).backward()
    assert t.get_submodule("stem1.conv").weight.grad is not None


@torch.no_grad()
def test_detect_decodes_half_precision_maps_in_float32():
    """bf16 keeps 8 significant bits: a coordinate near 1000 px would be rounded to 4 px.
    The decode runs in float32, so half-precision maps give the float32 boxes."""
    from gelanc.backend.fx import Detect

    det = Detect(nc=3, reg_max=16, strides=[8.0, 16.0, 32.0]).eval()
    gen = torch.Generator().manual_seed(0)
    maps = [torch.randn(1, 67, 1280 // s, 1280 // s, generator=gen).bfloat16() for s in (8, 16, 32)]
    y_half, _ = det(*maps)
    y_full, _ = det(*[m.float() for m in maps])
    assert y_half.dtype == torch.float32
    assert torch.allclose(y_half[:, :4], y_full[:, :4], atol=0.05)


@pytest.mark.parametrize("k, dilation", [(3, 1), (3, 2), (5, 1), (3, 3)])
@torch.no_grad()
def test_parallel_convs_merge_whenever_the_1x1_is_the_centre_tap(k, dilation):
    """A k×k conv (its padding centring it) beside a 1×1 on the same input merges into one
    conv — RepConvN's 3×3, but also a dilated or a 5×5 one — and the deploy module computes
    what the train module does, BatchNorms folded in."""
    src = f"""model m() {{
    x = input(4)
    a = batchnorm(conv2d(x, 8, {k}, dilation = {dilation}))
    b = batchnorm(conv2d(x, 8, 1))
    return a + b
}}"""
    torch.manual_seed(0)
    m = gelanc.compile(src).eval()
    randomise_bn(m)
    d = gelanc.deploy(m).eval()
    ops = [data["op"] for _, data in deploy(ir_of(m)).nodes(data=True)]
    assert ops == ["input", "conv2d"], ops
    x = torch.rand(2, 4, 20, 24)
    y, yd = m(x), d(x)
    y, yd = (y[0], yd[0]) if isinstance(y, (tuple, list)) else (y, yd)
    assert (y - yd).abs().max() <= 1e-5 * y.abs().max()
