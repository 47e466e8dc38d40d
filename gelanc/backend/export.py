"""Export a compiled module: ONNX (checked with onnxruntime), TorchScript, torch.export.

What is exported is the inference function ``images → predictions``: the module in
eval mode, its decoded output ``(B, 4 + nc, anchors)``. Every file is written into a
temporary folder beside the target (:mod:`gelanc.atomic`) and renamed into place once
it has been checked against PyTorch, so a failure — a full disk, a file that differs —
leaves the previous file, or none, and nothing beside it: whatever an exporter writes
next to its file (ONNX external data) goes with the temporary folder. The writers hand
the bytes to Python (:func:`gelanc.atomic.write_stream`), never a path to torch's C++
zip writer, which aborts the process on a full disk instead of raising.

The exporters' own chatter — torch's deprecation notices for ``torch.jit``, notes on
its internals, the dynamo ONNX exporter's ``[torch.onnx] …`` progress lines (on stdout,
where they would break ``--json``) — is nothing a user of ``gelanc export`` can act on,
so it is not shown (:func:`_quiet`): the command prints its own lines only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import fx, nn

from gelanc.atomic import atomic_write, write_stream

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript", "pt2": ".pt2"}


class Predictions(nn.Module):
    """images → decoded predictions; the raw maps are left out of the exported graph."""

    def __init__(self, model: fx.GraphModule):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[0]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Python warnings ignored, and library logging under ERROR held back, while the
    exporters run; what fails still raises, and gelanc reports it in one line."""
    before = logging.root.manager.disable
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(max(before, logging.WARNING))
        try:
            yield
        finally:
            logging.disable(before)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> float:
    """Largest difference as a fraction of the output's scale."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def export(model: fx.GraphModule, fmt: str, path: str | Path, imgsz: tuple[int, int] = (640, 640),
           dynamic: bool = False, half: bool = False, tolerance: float | None = None) -> dict:
    """Write ``model`` in ``fmt`` to ``path`` and check the file reproduces PyTorch.

    Returns a report: the path, the format, the input shape, and ``max_rel_error``,
    the largest difference to PyTorch's output as a fraction of its scale."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    path = Path(path)
    net = Predictions(model).eval()
    dtype = torch.float16 if half else torch.float32
    net = net.to(dtype)
    layout = "default"
    if fmt in ("torchscript", "pt2"):
        # files that run in PyTorch keep channels-last weights: their convolutions then run in
        # that layout whatever the input's, the fastest gelanc bench measures (gelanc.inference.fastpath)
        net, layout = net.to(memory_format=torch.channels_last), "channels-last"
    # a batch of 2 when dynamic, so that no exporter specialises the batch size to 1
    x = torch.rand(2 if dynamic else 1, 3, *imgsz, generator=torch.Generator().manual_seed(0)).to(dtype)
    with torch.no_grad():
        expected = net(x)
    tol = tolerance if tolerance is not None else (1e-2 if half else 1e-4)
    writer = {"onnx": _onnx, "torchscript": _torchscript, "pt2": _pt2}[fmt]
    got: dict = {}

    def write(tmp: Path) -> None:  # checked before it is renamed: a file that differs never replaces one
        got["err"] = err = _close(writer(net, x, tmp, dynamic), expected, tol)
        if err > tol:
            raise RuntimeError(f"the exported {fmt} file differs from PyTorch by {err:.2e} of the output's scale "
                               f"(allowed {tol:.0e}); nothing was kept")

    with _quiet():
        atomic_write(path, write)
    err = got["err"]
    return {"path": str(path), "format": fmt, "input": list(x.shape), "dtype": str(dtype).replace("torch.", ""),
            "dynamic": dynamic, "output": list(expected.shape), "max_rel_error": err, "layout": layout}


def _onnx(net: nn.Module, x: torch.Tensor, tmp: Path, dynamic: bool) -> torch.Tensor:
    import onnx
    import onnxruntime as ort

    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "predictions": {0: "batch", 2: "anchors"}}
    # fp16: the dynamo exporter (the TorchScript one cannot trace half precision on CPU)
    torch.onnx.export(net, (x,), str(tmp), input_names=["images"], output_names=["predictions"],
                      opset_version=18 if x.dtype == torch.float16 else 17, verbose=False,
                      dynamic_axes=axes if dynamic else None, dynamo=x.dtype == torch.float16,
                      **({"external_data": False} if x.dtype == torch.float16 else {}))
    beside = sorted(p.name for p in tmp.parent.iterdir() if p != tmp)  # the writer's folder is gelanc's own
    if beside:  # external data (weights over protobuf's 2 GB): a second file, which the rename would leave out
        raise RuntimeError(f"the ONNX exporter wrote {len(beside)} file(s) of external data beside the model "
                           f"(weights over 2 GB); gelanc writes single-file ONNX only, so nothing was kept")
    onnx.checker.check_model(str(tmp))
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's notes on graph optimisation are not the user's
    session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])


def _torchscript(net: nn.Module, x: torch.Tensor, tmp: Path, dynamic: bool) -> torch.Tensor:
    scripted = torch.jit.trace(net, (x,), check_trace=False)
    write_stream(tmp, lambda f: torch.jit.save(scripted, f))
    with torch.no_grad():
        return torch.jit.load(str(tmp))(x)


def _pt2(net: nn.Module, x: torch.Tensor, tmp: Path, dynamic: bool) -> torch.Tensor:
    shapes = None
    if dynamic:
        d = torch.export.Dim
        # sizes stay multiples of 32 (the largest stride): H = 32·h, W = 32·w
        shapes = {"images": {0: d("batch", min=1, max=1024), 2: 32 * d("h", min=1, max=128),
                             3: 32 * d("w", min=1, max=128)}}
    program = torch.export.export(net, (x,), dynamic_shapes=shapes)
    buf = io.BytesIO()  # torch.export.save aborts the process when its file fails, so: memory, then the file
    torch.export.save(program, buf)
    write_stream(tmp, lambda f: f.write(buf.getbuffer()))
    with torch.no_grad(), open(tmp, "rb") as f:  # a file, not a path: torch warns of a name without .pt2
        return torch.export.load(f).module()(x)
