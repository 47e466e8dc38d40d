"""`gelanc bench`: how fast gelanc and its models are on this machine, against the
machine's own dense matmul rate.

One run measures, on one device: the compiler (each spec from text to an initialised
GraphModule; the torch-free `stats` path over the zoo), inference of the train and
deploy modules for two batch sizes in several configurations, a training step, and
peak memory. Beside every inference figure it gives the roofline fraction
(model FLOPs ÷ time) ÷ (the machine's matmul FLOP/s), where model FLOPs are the
paper's count (2 × thop's multiply-accumulates, :mod:`gelanc.passes.cost`) and the
matmul rate is measured in the same run, as the best of the libraries torch would use
for it: on CPU the BLAS behind ``torch.mm`` and oneDNN (whose convolution a 1×1
convolution is a GEMM of), on CUDA cuBLAS.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gelanc.dsl.loader import builtin_specs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, warmup: int = 1, runs: int = 5,
           budget_s: float = 20.0) -> dict:
    """Best and median wall time of ``fn`` over ``runs`` calls (fewer if they exceed
    ``budget_s``), after ``warmup`` calls; the device synchronised around each."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs and (len(times) < 2 or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"best_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def peak_rss_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the roofline ---------------------------------------------------------------------


@torch.no_grad()
def matmul_rates(device: torch.device, quick: bool = False) -> dict[str, dict]:
    """The machine's dense matmul FLOP/s per dtype: {dtype: {"gflops", "via"}}."""
    n = 1024 if quick else 2048
    out: dict[str, dict] = {}
    if device.type == "cpu":
        a, b = torch.randn(n, n), torch.randn(n, n)
        blas = 2 * n**3 / timeit(lambda: torch.mm(a, b), device)["best_s"] / 1e9
        # a 1×1 convolution over a (1, K, H, W) channels-last image is the (H·W × K) @ (K × K) GEMM;
        # the roofline is the best of a few shapes
        onednn = 0.0
        for k, hw in ((512, 64), (1024, 32)) if quick else ((512, 64), (1024, 64), (2048, 32)):
            x = torch.randn(1, k, hw, hw).contiguous(memory_format=torch.channels_last)
            w = torch.randn(k, k, 1, 1)
            t = timeit(lambda x=x, w=w: torch.nn.functional.conv2d(x, w), device)["best_s"]
            onednn = max(onednn, 2 * hw * hw * k * k / t / 1e9)
        out["float32"] = max({"gflops": blas, "via": "BLAS (torch.mm)"},
                             {"gflops": onednn, "via": "oneDNN (1×1 convolution as GEMM)"}, key=lambda r: r["gflops"])
        out["float32"]["all"] = {"blas": blas, "onednn": onednn}
        return out
    n = 4096 if quick else 8192
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    try:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            t = timeit(lambda a=a, b=b: torch.mm(a, b), device, warmup=3, runs=10)["best_s"]
            out[str(dtype).removeprefix("torch.")] = {"gflops": 2 * n**3 / t / 1e9, "via": "cuBLAS (torch.mm)"}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


# ---- the compiler ------------------------------------------------------------------------


def compiler_times(specs: list[Path]) -> dict:
    """Seconds to compile each spec to an initialised GraphModule, and for the torch-free
    `stats` path (parse, lower, validate, count train and deploy) over all of them."""
    import gelanc
    from gelanc.pipeline import compile_file
    from gelanc.stats import model_stats

    gelanc.compile(specs[0])  # imports and parser tables warm: the timing is of compiling
    per_spec = []
    for spec in specs:
        t = time.perf_counter()
        gelanc.compile(spec)
        per_spec.append({"spec": spec.stem, "seconds": time.perf_counter() - t})
    t = time.perf_counter()
    for spec in specs:
        for g in compile_file(spec):
            model_stats(g, (640, 640))
    return {"compile": per_spec, "stats_all_s": time.perf_counter() - t}


# ---- inference and training --------------------------------------------------------------

CPU_MODES = ("eager", "channels_last", "compile")
CUDA_MODES = ("eager", "channels_last", "fp16", "bf16", "compile", "cuda_graphs")


def _prepared(module, mode: str, device: torch.device):
    """The module and an input converter for one configuration."""
    m = module.to(device).eval()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode, torch.float32)
    if device.type == "cuda" and mode in ("compile", "cuda_graphs"):
        dtype = torch.float16  # on a GPU the compiled configurations are measured in half precision
    fmt = torch.contiguous_format if mode == "eager" else torch.channels_last
    m = m.to(dtype=dtype, memory_format=fmt)
    if mode == "compile":  # as gelanc.inference.fastpath compiles: weights frozen into the graph
        m = torch.compile(m, options={"freezing": True})
    elif mode == "cuda_graphs":
        m = torch.compile(m, mode="reduce-overhead")
    return m, (lambda x: x.to(device, dtype=dtype).contiguous(memory_format=fmt)), dtype


@torch.no_grad()
def inference(module, gflops: float, batch: int, imgsz: int, mode: str, device: torch.device,
              rates: dict[str, dict], quick: bool = False) -> dict:
    """One configuration's latency, throughput and roofline fraction."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    m, convert, dtype = _prepared(module, mode, device)
    x = convert(torch.rand(batch, 3, imgsz, imgsz))
    t0 = time.perf_counter()
    m(x)  # the first call: torch.compile's compilation, CUDA graph capture, oneDNN's kernel choice
    _sync(device)
    first = time.perf_counter() - t0
    t = timeit(lambda: m(x), device, warmup=2 if mode == "cuda_graphs" else 0, runs=3 if quick else 7)
    achieved = gflops * batch / t["best_s"]
    rate = rates.get(str(dtype).removeprefix("torch."), rates["float32"])["gflops"]
    row = {"batch": batch, "mode": mode, "dtype": str(dtype).removeprefix("torch."), "ms": 1000 * t["best_s"],
           "median_ms": 1000 * t["median_s"], "images_per_s": batch / t["best_s"], "first_call_s": first,
           "gflops_per_s": achieved, "roofline": achieved / rate}
    row["peak_mem_mib"] = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                           else peak_rss_mib())
    return row


def training_step(spec: Path, batch: int, imgsz: int, device: torch.device, quick: bool = False) -> dict:
    """A full optimizer step of the train graph (forward, TAL loss, backward, SGD) on
    random images and targets: seconds a step and images/s, in mixed precision on CUDA."""
    import gelanc
    from gelanc.backend.fx import heads
    from gelanc.train.hyp import Hyp
    from gelanc.train.loss import DetectionLoss
    from gelanc.train.optim import make_optimizer
    from gelanc.train.setup import amp_dtype
    from gelanc.train.val import autocast

    hyp = Hyp(optimizer="SGD")  # a step of the long runs a GPU is for
    model = gelanc.compile(spec, nc=80).to(device).train()
    h = heads(model)[0]
    loss_fn = DetectionLoss(h.nc, h.reg_max, h.strides, hyp)
    opt = make_optimizer(model, batch, hyp)
    amp = amp_dtype(device, "auto")
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, imgsz, imgsz, generator=gen).to(device)
    n = 4 * batch
    boxes = torch.cat([torch.rand(n, 2, generator=gen) * 0.6 + 0.2, torch.rand(n, 2, generator=gen) * 0.2 + 0.05], 1)
    targets = torch.cat([torch.arange(n).remainder(batch).float()[:, None],
                         torch.randint(0, 80, (n, 1), generator=gen).float(), boxes], 1).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with autocast(device, amp):
            preds = model(x)
        loss, _ = loss_fn(preds, targets)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    t = timeit(step, device, warmup=1, runs=2 if quick else 5)
    return {"spec": spec.stem, "batch": batch, "imgsz": imgsz, "precision": str(amp or torch.float32).removeprefix(
        "torch."), "s_per_step": t["best_s"], "images_per_s": batch / t["best_s"],
        "peak_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mib()}


# ---- the run -------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    info = {"device": device.type, "torch": torch.__version__, "python": platform.python_version(),
            "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "cores": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(device: torch.device, models: list[Path], imgsz: int = 640, batches: tuple[int, int] | None = None,
        modes: tuple[str, ...] | None = None, train_batch: int | None = None, quick: bool = False,
        progress: Callable[[str], None] | None = None) -> dict:
    """The whole benchmark; ``progress(what)`` is told what is being measured."""
    import gelanc
    from gelanc.backend.fx import ir_of
    from gelanc.stats import model_stats

    say = progress or (lambda _: None)
    batches = batches or ((1, 32) if device.type == "cuda" else (1, 8))
    modes = modes or (CUDA_MODES if device.type == "cuda" else CPU_MODES)
    train_batch = train_batch or (16 if device.type == "cuda" else 2)
    out: dict = {"machine": machine(device), "imgsz": imgsz}
    say("the matmul roofline")
    out["matmul"] = matmul_rates(device, quick)
    say("the compiler over the zoo")
    out["compiler"] = compiler_times(builtin_specs() if not quick else list(models))
    rows = []
    for spec in models:
        train = gelanc.compile(spec)
        for graph, module in (("deploy", gelanc.deploy(train)), ("train", train)):
            gflops = model_stats(ir_of(module), (imgsz, imgsz))[graph]["gflops"]
            for batch in batches:
                for mode in modes:
                    say(f"{spec.stem} {graph} graph, batch {batch}, {mode}")
                    r = inference(module, gflops, batch, imgsz, mode, device, out["matmul"], quick)
                    rows.append({"spec": spec.stem, "graph": graph, "gflops": gflops, **r})
    out["inference"] = rows
    say(f"a training step of {models[-1].stem}")
    out["training"] = training_step(models[-1], train_batch, imgsz, device, quick)
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def report(r: dict) -> str:
    """The run as Markdown tables, as docs/benchmarks.md carries them."""
    m = r["machine"]
    lines = [f"Machine: {m.get('gpu') or m['cpu']}, {m['threads']} threads, torch {m['torch']}, "
             f"Python {m['python']}; images {r['imgsz']}×{r['imgsz']}.", "",
             "| matmul | GFLOP/s | via |", "|---|---|---|"]
    for k, v in r["matmul"].items():
        others = "; ".join(f"{name}: {g:.0f}" for name, g in v.get("all", {}).items())
        lines.append(f"| {k} | {v['gflops']:.0f} | {v['via']}{f' ({others})' if others else ''} |")
    c = r["compiler"]
    lines += ["", "| compile (text → initialised GraphModule) | s |", "|---|---|"]
    lines += [f"| {row['spec']} | {row['seconds']:.3f} |" for row in c["compile"]]
    lines += [f"| `stats` path, all of the above (parse → counts, no torch) | {c['stats_all_s']:.3f} |", "",
              "| model | graph | batch | mode | dtype | ms | images/s | GFLOP/s | roofline | first call s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["inference"]:
        lines.append(f"| {row['spec']} | {row['graph']} | {row['batch']} | {row['mode']} | {row['dtype']} | "
                     f"{row['ms']:.1f} | {row['images_per_s']:.1f} | {row['gflops_per_s']:.0f} | "
                     f"{100 * row['roofline']:.0f}% | {row['first_call_s']:.1f} |")
    t = r["training"]
    lines += ["", "| training step | batch | precision | s/step | images/s | peak memory MiB |",
              "|---|---|---|---|---|---|",
              f"| {t['spec']} at {t['imgsz']} | {t['batch']} | {t['precision']} | {t['s_per_step']:.2f} | "
              f"{t['images_per_s']:.1f} | {t['peak_mem_mib']:.0f} |", "",
              f"Peak resident memory of the run: {r['peak_rss_mib']:.0f} MiB."]
    return "\n".join(lines)
