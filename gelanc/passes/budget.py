"""What a network will cost in memory, known before torch allocates any of it.

A spec (or the spec a checkpoint embeds) decides how many weights the torch stage
allocates, and an input size decides how large every feature map is. Both are read
off the IR — channels for the parameters, the shape pass for the activations — and
checked against :mod:`gelanc.limits`, so that a hostile or mistaken file is a clear
error rather than gigabytes of allocation.
"""

from __future__ import annotations

import math

import networkx as nx

from gelanc.diagnostics import GelError
from gelanc.ir.graph import inputs
from gelanc.ir.located import fail
from gelanc.limits import MAX_ACTIVATIONS, MAX_IMGSZ, MAX_PARAMS
from gelanc.ops import REGISTRY
from gelanc.passes.shapes import infer


def params_per_node(g: nx.DiGraph) -> dict[str, int]:
    """Each node's parameter count (the registry's rule; channels alone decide it)."""
    shapes = infer(g)
    return {n: REGISTRY[d["op"]].params(d["attrs"], [shapes[r.node][r.out] for r in inputs(g, n)])
            for n, d in g.nodes(data=True)}


def check_params(g: nx.DiGraph, limit: int = MAX_PARAMS) -> int:
    """The network's parameter count, or a GelError at its largest op when over ``limit``."""
    per = params_per_node(g)
    total = sum(per.values())
    if total > limit:
        worst = max(per, key=per.__getitem__)
        raise fail(g, worst, f"the network would have {total:,} parameters, over gelanc's limit of {limit:,} "
                             f"({per[worst]:,} of them in this op)")
    return total


def activations(g: nx.DiGraph, size: tuple[int, int]) -> int:
    """Elements of every node's outputs for one image of ``size``: what a forward
    pass that kept them all would hold."""
    return sum(math.prod(s) for outs in infer(g, size, check_stride=False).values() for s in outs)


def check_training_memory(g: nx.DiGraph, size: tuple[int, int], batch: int, bytes_per_value: int,
                          device_bytes: int) -> int:
    """The bytes a training step keeps for its backward pass — every node's output for
    each image of the batch — or a GelError when that is more than twice what the device
    has: a run (or a checkpoint's stored settings) that could only end out of memory,
    refused before its first batch. Returns the estimate."""
    need = activations(g, size) * batch * bytes_per_value
    if need > 2 * device_bytes:
        raise GelError(f"a training step at {size[0]}×{size[1]} with {batch} images per process keeps about "
                       f"{need / 2**30:,.1f} GiB of feature maps; this device has {device_bytes / 2**30:,.1f} GiB "
                       f"(use a smaller --batch or --imgsz)")
    return need


def device_memory(device) -> int:
    """Bytes of memory on ``device`` (a torch.device): the GPU's, or the machine's RAM."""
    import os

    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no bound from here
        return 1 << 62


def check_run_size(g: nx.DiGraph, imgsz) -> int:
    """A square size to run the network at — given, or stored in a checkpoint and so
    checked as any foreign value: an integer, a multiple of the network's largest
    stride, within :func:`check_input`'s bounds. A GelError (no location) says why."""
    from gelanc.passes.shapes import max_stride

    if type(imgsz) is not int or imgsz < 1:
        raise GelError("the image size (--imgsz, or the checkpoint's training size) must be a positive integer")
    stride = g.graph.get("max_stride", max_stride(g))[0]  # of the IR: a head's strides may be fractions
    if imgsz < stride or imgsz % stride:
        raise GelError(f"image size {imgsz} is not a multiple of the model's largest stride, {stride}")
    try:
        check_input(g, (imgsz, imgsz))
    except GelError as e:
        raise GelError(f"image size {imgsz}: {e.message}") from None
    return imgsz


def check_input(g: nx.DiGraph, size: tuple[int, int]) -> None:
    """``size`` is one gelanc runs this network at: each side at most MAX_IMGSZ, and one
    image's feature maps within MAX_ACTIVATIONS elements. (The stride is checked by
    :func:`gelanc.passes.shapes.check_size`.)"""
    h, w = size
    if max(h, w) > MAX_IMGSZ:
        raise GelError(f"input size {h}×{w} is over gelanc's limit of {MAX_IMGSZ} pixels a side")
    n = activations(g, size)
    if n > MAX_ACTIVATIONS:
        raise GelError(f"at {h}×{w} one image's feature maps would hold {n:,} values, over gelanc's limit "
                       f"of {MAX_ACTIVATIONS:,}; use a smaller size")
