"""`gelanc bench` and the inference fast path it chooses."""

import json
from pathlib import Path

import pytest
import torch

import gelanc
from gelanc.cli import main
from gelanc.inference.fastpath import prepare

NOBN = Path(__file__).parent / "specs" / "nobn.gel"
SPECS = Path(gelanc.__file__).resolve().parent.parent / "specs"


def test_bench_measures_every_configuration_against_the_roofline(capsys):
    code = main(["bench", "--models", str(NOBN), "--imgsz", "64", "--batch", "1", "2", "--modes", "eager",
                 "channels_last", "--quick", "--device", "cpu", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["matmul"]["float32"]["gflops"] > 0
    assert r["matmul"]["float32"]["gflops"] >= max(r["matmul"]["float32"]["all"].values()) - 1e-9
    rows = r["inference"]
    assert {(x["graph"], x["batch"], x["mode"]) for x in rows} == {
        (g, b, m) for g in ("deploy", "train") for b in (1, 2) for m in ("eager", "channels_last")}
    for x in rows:
        seconds = x["ms"] / 1000
        assert seconds > 0 and x["images_per_s"] == pytest.approx(x["batch"] / seconds)
        # the roofline fraction is the model's FLOPs over time over the matmul rate, as documented
        assert x["roofline"] == pytest.approx(x["gflops"] * x["batch"] / seconds / r["matmul"]["float32"]["gflops"])
    deploy = next(x for x in rows if x["graph"] == "deploy")
    train = next(x for x in rows if x["graph"] == "train")
    assert 0 < deploy["gflops"] <= train["gflops"]
    assert r["training"]["images_per_s"] > 0 and r["compiler"]["compile"][0]["seconds"] > 0


def test_bench_refuses_a_mode_the_device_lacks(capsys):
    code = main(["bench", "--models", str(NOBN), "--modes", "cuda_graphs", "--device", "cpu", "--quick"])
    assert code == 2 and "the modes are eager, channels_last, compile" in capsys.readouterr().err


def test_fast_path_gives_the_same_detections():
    torch.manual_seed(0)
    m = gelanc.deploy(gelanc.compile(SPECS / "gelan-t.gel", nc=4)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = m(x)[0]
        for compile in (False, True):
            p = prepare(_copy(m), torch.device("cpu"), compile=compile)
            got = p.module(p.convert(x))[0]
            assert "channels-last" in p.description and ("torch.compile" in p.description) == compile
            assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max()))


def _copy(m):
    import copy

    return copy.deepcopy(m)


def test_fast_path_compiles_only_runs_long_enough_to_repay_it():
    m = gelanc.compile(NOBN, nc=4).eval()
    assert "torch.compile" not in prepare(m, torch.device("cpu"), images=10).description
    assert "torch.compile" in prepare(_copy(m), torch.device("cpu"), images=10_000).description
