"""gelanc: a compiler and model zoo for GELAN networks (YOLOv9).

The torch-free pipeline (parse → lower → passes → counts) lives in ``gelanc.dsl``,
``gelanc.ir``, ``gelanc.passes`` and ``gelanc.stats``. The functions below are the
torch stage; they import torch only when called, so ``import gelanc`` stays fast.

    m = gelanc.compile("specs/yolov9-c.gel", nc=20)   # the train graph, initialised
    d = gelanc.deploy(m)                              # aux removed, BN and RepConvN folded
    gelanc.save(d, "yolov9-c.pt"); gelanc.load("yolov9-c.pt")
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["compile", "deploy", "save", "load"]


def compile(spec, model: str | None = None, **params):  # noqa: A001 - the API's name
    """Compile a spec (a path, or `.gel` text) into a ``torch.fx.GraphModule``.

    ``params`` override the model's parameters (``nc=20``); ``model`` picks one model
    of a file that defines several. Raises :class:`gelanc.diagnostics.GelError` on a
    bad spec."""
    from gelanc import pipeline

    return pipeline.module(pipeline.graph(pipeline.program(spec), model, **params))


def deploy(module):
    """The inference module of a compiled one: aux branch removed, BN and RepConvN folded."""
    from gelanc.backend.fx import deploy_module

    return deploy_module(module)


def save(module, path, **extra):
    """Write a checkpoint embedding the `.gel` source beside the weights (atomically)."""
    from gelanc.backend.checkpoint import save as _save

    return _save(module, path, **extra)


def load(path):
    """Rebuild a module from a checkpoint (read with ``torch.load(weights_only=True)``)."""
    from gelanc.backend.checkpoint import load as _load

    return _load(path)
