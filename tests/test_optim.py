"""The optimisation recipe: hyper-parameter files, parameter groups, schedule, EMA."""

import math

import pytest
import torch
from torch import nn

from gelanc.train.hyp import Hyp, HypError, load_hyp
from gelanc.train.optim import (
    accumulation,
    ema_decay,
    lr_factor,
    make_ema,
    make_optimizer,
    param_groups,
    set_schedule,
    warmup_iterations,
)


def test_scratch_high_is_the_reference_recipe():
    h = load_hyp("scratch-high")
    assert h.optimizer == "SGD" and h.close_mosaic == 15  # the reference trainer's default, its README's flag
    assert (h.lr0, h.lrf, h.momentum, h.weight_decay) == (0.01, 0.01, 0.937, 0.0005)
    assert (h.warmup_epochs, h.warmup_momentum, h.warmup_bias_lr) == (3.0, 0.8, 0.1)
    assert (h.box, h.cls, h.dfl, h.aux_weight) == (7.5, 0.5, 1.5, 0.25)
    assert (h.topk, h.alpha, h.beta) == (10, 0.5, 6.0)
    assert (h.hsv_h, h.hsv_s, h.hsv_v, h.translate, h.scale, h.fliplr, h.mosaic, h.mixup) == (
        0.015, 0.7, 0.4, 0.1, 0.9, 0.5, 1.0, 0.15)


def test_the_default_differs_from_the_reference_in_optimizer_and_augmentation_strength_only():
    default, reference = Hyp().model_dump(), load_hyp("scratch-high").model_dump()
    assert {k for k in default if default[k] != reference[k]} == {"optimizer", "scale", "mixup", "close_mosaic"}
    assert (default["optimizer"], default["scale"], default["mixup"], default["close_mosaic"]) == ("auto", 0.5, 0.0, 10)
    assert load_hyp("default") == Hyp() == load_hyp()


def test_a_hyp_file_of_the_references_starts_from_its_recipe(tmp_path):
    # as the reference's hyp.scratch-high.yaml is written: anchor-era keys, a perspective of 0,
    # and dfl given twice (the first meant as obj; YAML keeps the last)
    f = tmp_path / "hyp.scratch-high.yaml"
    f.write_text("lr0: 0.01\nbox: 7.5\ncls: 0.5\ncls_pw: 1.0\ndfl: 0.7\nobj_pw: 1.0\ndfl: 1.5\niou_t: 0.20\n"
                 "anchor_t: 5.0\nfl_gamma: 0.0\nscale: 0.9\nperspective: 0.0\nmixup: 0.15\ncopy_paste: 0.3\n")
    assert load_hyp(f) == load_hyp("scratch-high")
    f.write_text("perspective: 0.001\n")
    with pytest.raises(HypError, match="perspective: Input should be less than or equal to 0"):
        load_hyp(f)


def test_an_unknown_recipe_names_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HypError, match=r"no such hyper-parameter file or recipe: scratch_high \(recipes: default, "
                                       r"scratch-high\)"):
        load_hyp("scratch_high")
    (tmp_path / "scratch-high").write_text("lr0: 0.02\n")  # a file of that name is the file, not the recipe
    assert load_hyp("scratch-high").lr0 == 0.02 and load_hyp("scratch-high").optimizer == "auto"


def test_hyp_file_overrides_and_reference_keys_are_accepted(tmp_path):
    f = tmp_path / "hyp.yaml"
    f.write_text("lr0: 0.02\nmixup: 0.0\nobj: 0.7\nanchor_t: 5.0\n")  # obj, anchor_t: the reference's own keys
    h = load_hyp(f)
    assert h.lr0 == 0.02 and h.mixup == 0.0 and h.momentum == 0.937


@pytest.mark.parametrize("text, message", [
    ("mixpu: 0.1\n", "mixpu: not a setting gelanc knows"),
    ("lr0: -1\n", "lr0: Input should be greater than 0"),
    ("fliplr: 2\n", "fliplr: Input should be less than or equal to 1"),
    ("lr0: [1\n", r"hyp.yaml:2:1: not valid YAML"),
    ("- 1\n", "expected a mapping"),
])
def test_bad_hyp_files_are_located_errors(tmp_path, text, message):
    f = tmp_path / "hyp.yaml"
    f.write_text(text)
    with pytest.raises(HypError, match=message):
        load_hyp(f)


def test_mosaic_closes_for_the_last_close_mosaic_epochs():
    h = load_hyp("scratch-high")
    assert h.mosaic_epochs(500) == 485  # the reference: the last 15 of 500
    assert h.mosaic_epochs(30) == 15  # as the reference's --close-mosaic 15 would: no scaling to the run
    assert h.mosaic_epochs(10) == 0
    assert Hyp(close_mosaic=0).mosaic_epochs(30) == 30


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_weight_decay_only_on_conv_weights():
    m = _tiny()
    g = param_groups(m)
    assert [p.shape for p in g["decay"]] == [m[0].weight.shape, m[2].weight.shape]
    assert [p.shape for p in g["bn"]] == [m[1].weight.shape]
    assert [p.shape for p in g["bias"]] == [m[1].bias.shape, m[2].bias.shape]
    opt = make_optimizer(m, batch=16, hyp=Hyp(optimizer="SGD"))
    decays = [grp["weight_decay"] for grp in opt.param_groups]
    assert decays[:2] == [0.0, 0.0] and decays[2] == pytest.approx(0.0005)  # 16 × 4 accumulated = 64
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.937
    assert accumulation(16, Hyp()) == 4 and accumulation(128, Hyp()) == 1


def test_fixed_parameters_are_not_optimised():
    m = _tiny()
    m[2].weight.requires_grad_(False)
    assert all(p is not m[2].weight for g in param_groups(m).values() for p in g)


def test_schedule_warms_up_then_decays_linearly():
    h = Hyp(optimizer="SGD")
    m = _tiny()
    opt = make_optimizer(m, 16, h)
    warm = warmup_iterations(10, h)
    assert warm == 100  # 3 epochs of 10 batches is less than the floor of 100
    acc = set_schedule(opt, 0, 0, 10, warm, 16, h)
    assert acc == 1
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1), 0.0, 0.0]
    assert opt.param_groups[0]["momentum"] == pytest.approx(0.8)
    set_schedule(opt, 50, 5, 10, warm, 16, h)
    target = 0.01 * lr_factor(5, 10, h)
    assert opt.param_groups[1]["lr"] == pytest.approx(target / 2)
    assert opt.param_groups[0]["lr"] == pytest.approx((0.1 + target) / 2)
    assert set_schedule(opt, 100, 9, 10, warm, 16, h) == 4
    assert all(g["lr"] == pytest.approx(0.01 * (0.1 * 0.99 + 0.01)) for g in opt.param_groups)
    assert lr_factor(0, 10, h) == 1 and lr_factor(10, 10, h) == pytest.approx(0.01)


def test_ema_follows_the_ramped_decay():
    h = Hyp(ema_tau=2.0)
    m = _tiny()
    ema = make_ema(m, h)
    ema.update_parameters(m)  # the first update copies
    before = m[0].weight.detach().clone()
    with torch.no_grad():
        m[0].weight.add_(1.0)
        m[1].running_mean.add_(2.0)
    ema.update_parameters(m)
    d = ema_decay(1, h)
    assert d == pytest.approx(0.9999 * (1 - math.exp(-0.5)))
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * (before + 1), atol=1e-6)
    assert torch.allclose(ema.module[1].running_mean, torch.full((4,), (1 - d) * 2.0), atol=1e-6)
    assert int(ema.module[1].num_batches_tracked) == int(m[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.parameters())


# ---- the optimizer's choice --------------------------------------------------------------


def test_auto_picks_adamw_for_short_runs_and_sgd_for_long_ones():
    from gelanc.train.optim import AUTO_STEPS, optimizer_steps, resolve

    h = Hyp(optimizer="auto")
    assert optimizer_steps(400, 30, h) == 7 * 30  # ceil(400 / 64) steps an epoch
    short = resolve(h, optimizer_steps(400, 30, h), nc=5)
    assert short.optimizer == "AdamW" and short.lr0 == round(0.002 * 5 / 9, 6) == 0.001111
    assert short.momentum == 0.9 and short.warmup_bias_lr == 0.0
    long = resolve(h, AUTO_STEPS + 1, nc=5)
    assert (long.optimizer, long.lr0, long.momentum) == ("SGD", 0.01, 0.937)
    assert resolve(Hyp(optimizer="SGD"), 10, nc=5) == Hyp(optimizer="SGD")  # a concrete choice stays as it is


def test_adamw_has_the_three_groups_and_its_warmup_ramps_beta1():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    h = Hyp(optimizer="AdamW", lr0=0.001, momentum=0.9)
    opt = make_optimizer(model, 16, h)
    assert isinstance(opt, torch.optim.AdamW) and [len(g["params"]) for g in opt.param_groups] == [3, 1, 2]
    assert opt.param_groups[2]["weight_decay"] == pytest.approx(0.0005 * 16 * 4 / 64)
    set_schedule(opt, 0, 0, 10, warmup=100, batch=16, hyp=h)
    assert opt.param_groups[2]["betas"] == (0.8, 0.999) and opt.param_groups[2]["lr"] == 0.0
    set_schedule(opt, 100, 0, 10, warmup=100, batch=16, hyp=h)
    assert opt.param_groups[2]["betas"] == (0.9, 0.999) and opt.param_groups[2]["lr"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="not concrete"):
        make_optimizer(model, 16, Hyp(optimizer="auto"))
