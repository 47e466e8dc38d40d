"""The table of the model-YAML modules gelanc converts: for each, the zoo block it is
(or the expression it becomes), its arguments, how it changes the stride, and how
the conversion treats it. One entry per module; adding a module is adding a row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Module:
    """How one YAML module becomes .gel.

    ``block``: the zoo block it is (None for the parameter-free ones, which become
    expressions); ``stem``: the naming stem; ``params``: the block's arguments after the
    input, in the YAML's order (a longer args list is an error); ``stride``: how it
    changes the feature map's stride (a callable of the args for Conv); ``kind``: how the
    conversion treats it — "block" (a zoo block called on one input), "route" (CBLinear:
    its outputs are what a fuse may route), "fuse" (CBFuse: routed parts, then the map they
    join), "join" (Concat), "enlarge" (nn.Upsample), "pass" (the image, or its input, as it is), "head";
    for a head, ``dual`` (main and auxiliary halves) and ``ultralytics_head`` (the narrower
    class branch when the YAML is ultralytics')."""

    block: str | None
    stem: str
    params: tuple[str, ...] = ()
    stride: Callable[[list], float] = lambda args: 1
    scaled: bool = True  # args[0] is an output width the width multiple scales
    kind: str = "block"
    dual: bool = False
    ultralytics_head: bool = False
    fixed: dict = field(default_factory=dict)  # params whose only convertible value is this


def conv_stride(args: list) -> float:
    return args[2] if len(args) > 2 and isinstance(args[2], int) else 1


_PASS = {"Silence", "nn.Identity", "Identity"}


MODULES: dict[str, Module] = {
    "Conv": Module("Conv", "conv", ("c2", "k", "s", "p", "g", "d", "act"), conv_stride),
    "AConv": Module("AConv", "down", ("c2",), lambda a: 2),
    "ADown": Module("ADown", "down", ("c2",), lambda a: 2),
    "ELAN1": Module("ELAN1", "elan", ("c2", "c3", "c4")),
    "RepNCSPELAN4": Module("RepNCSPELAN4", "elan", ("c2", "c3", "c4", "c5")),
    "SPPELAN": Module("SPPELAN", "spp", ("c2", "c3", "k"), fixed={"k": 5}),
    "CBLinear": Module("CBLinear", "route", ("c2s",), scaled=False, kind="route"),
    "CBFuse": Module(None, "fuse", scaled=False, kind="fuse"),
    "Concat": Module(None, "cat", scaled=False, kind="join"),
    "nn.Upsample": Module(None, "up", scaled=False, kind="enlarge"),
    **{name: Module(None, "x", scaled=False, kind="pass") for name in _PASS},
    "DDetect": Module("DDetect", "head", scaled=False, kind="head"),
    "DualDDetect": Module("DualDDetect", "head", scaled=False, kind="head", dual=True),
    "Detect": Module("Detect", "head", scaled=False, kind="head", ultralytics_head=True),
}


def module_kind(module: str) -> str:
    """How the conversion treats a YAML module (an unknown one is refused where it is named)."""
    m = MODULES.get(module)
    return m.kind if m is not None else "block"
