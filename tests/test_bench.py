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


def test_bench_times_the_model_on_the_input_it_reports(monkeypatch):
    """What a row says was measured is what ran: every call gets a batch of the stated size
    and image size, in the mode's memory layout; timeit makes warmup + runs calls and
    reports the fastest of the timed ones. (Only the arithmetic on the times is derived.)"""
    from gelanc.tools.bench import inference, timeit

    now, durations, calls = [0.0], iter([5.0, 5.0, 0.5, 0.2, 0.9]), []  # two warmup calls, then three timed

    def fn():
        calls.append(1)
        now[0] += next(durations)

    import gelanc.tools.bench as bench

    with monkeypatch.context() as mp:
        mp.setattr(bench.time, "perf_counter", lambda: now[0])
        t = timeit(fn, torch.device("cpu"), warmup=2, runs=3)
    assert len(calls) == 5 and t["runs"] == 3
    assert t["best_s"] == pytest.approx(0.2) and t["median_s"] == pytest.approx(0.5)

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 1)
            self.seen = []

        def forward(self, x):
            self.seen.append((tuple(x.shape), x.is_contiguous(memory_format=torch.channels_last), x.dtype))
            return self.conv(x)

    rates = {"float32": {"gflops": 100.0}}
    for mode, channels_last in (("eager", False), ("channels_last", True)):
        m = Recorder()
        row = inference(m, gflops=1.0, batch=3, imgsz=32, mode=mode, device=torch.device("cpu"), rates=rates,
                        quick=True)
        assert set(m.seen) == {((3, 3, 32, 32), channels_last, torch.float32)}
        assert len(m.seen) == 1 + 3  # the first call, then the quick run's three
        assert row["batch"] == 3 and row["mode"] == mode and row["dtype"] == "float32"
