"""What the commands share: spec and checkpoint loading, --set and --imgsz parsing, and
the two ways a failed write or a refused target becomes one user-error line."""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from gelanc.errors import UserError

EXIT_OK, EXIT_FAIL, EXIT_USER = 0, 1, 2


@contextmanager
def refused():
    """A check before the work — a folder that is a file, an input given as the output,
    what is not a regular file — as one user-error line, its reason as it is."""
    try:
        yield
    except OSError as e:
        raise UserError(str(e)) from None


@contextmanager
def writing(target):
    """A failed write of ``target`` as one user-error line: "cannot write TARGET: why"."""
    try:
        yield
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None


def specs_of(files: list[str]) -> list[Path]:
    if files:
        return [Path(f) for f in files]
    from gelanc.dsl.loader import builtin_specs

    return builtin_specs()


def imgsz_arg(text: str) -> tuple[int, int]:
    from gelanc.stats import parse_imgsz

    try:
        h, w = parse_imgsz(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text}")
    return (h, w)


def model_params(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"--set takes NAME=VALUE, got '{p}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def module_of(source: str, params: dict, train: bool = False):
    """A spec (compiled, freshly initialised) or a checkpoint (loaded): deploy graph unless ``train``."""
    import gelanc
    from gelanc.backend.fx import ir_of

    if source.endswith((".pt", ".pth")):
        if params:
            raise UserError("--set applies to specs; a checkpoint keeps the parameters it was built with")
        m = gelanc.load(source)
    else:
        m = gelanc.compile(source, **params)
    deployed = m.meta["gelanc"].get("deployed")
    if train and deployed:
        raise UserError(f"{source} holds a deploy graph; --train needs a train checkpoint or a spec")
    if not train and not deployed:
        m = gelanc.deploy(m)
    return m, ir_of(m)


def checkpoint_model(path: str, graph: str):
    """A training checkpoint's EMA weights as the deploy graph, or the train graph; and
    the checkpoint's dict (read once)."""
    import gelanc
    from gelanc.backend.checkpoint import build, read

    ckpt = read(path)
    m = build(ckpt, path)
    deployed = m.meta["gelanc"].get("deployed")
    if graph == "train" and deployed:
        raise UserError(f"{path} holds a deploy graph; --graph train needs a train checkpoint")
    if graph == "deploy" and not deployed:
        m = gelanc.deploy(m)
    return m, ckpt


def check_imgsz(m, imgsz) -> None:
    """A square size the network is built for and gelanc runs it at, or a user error
    (``imgsz`` may be a checkpoint's: see :func:`gelanc.passes.budget.check_run_size`)."""
    from gelanc.backend.fx import ir_of
    from gelanc.diagnostics import GelError
    from gelanc.passes.budget import check_run_size

    try:
        check_run_size(ir_of(m), imgsz)
    except GelError as e:
        raise UserError(e.message) from None


def class_names(ckpt: dict, nc: int) -> list[str]:
    names = ckpt.get("names")
    return list(names) if names else [str(i) for i in range(nc)]


def device_of(spec: str | None):
    from gelanc.train import ddp

    try:
        return ddp.one_device(spec)
    except ValueError as e:
        raise UserError(str(e)) from None


def zoo_spec(name: str) -> Path:
    """A zoo model by name (gelan-c) or a spec file."""
    from gelanc.dsl.loader import library_root

    p = Path(name)
    if p.is_file():
        return p
    zoo = library_root() / "specs" / f"{name}.gel"
    if not zoo.is_file():
        raise UserError(f"'{name}' is neither a spec file nor a zoo model (gelan-t … yolov9-e)")
    return zoo
