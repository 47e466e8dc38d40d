"""The op registry: every primitive op of the IR, declared exactly once.

An :class:`OpDef` holds everything the rest of gelanc knows about an op:

* ``attrs`` — a pydantic model of its attributes (validated, with defaults; the
  order of its fields is the order of positional arguments in `.gel` after the
  tensor inputs);
* ``arity`` — how many tensor inputs it takes (``max`` None: variadic);
* ``shape`` — input shapes + attributes → output shapes, or :class:`ShapeError`;
* ``params`` and ``macs`` — its cost, by the thop 0.1.1 convention that the
  YOLOv9 paper's tables use (see docs/architecture.md, "Counting");
* ``lower`` — how it is built in a torch.fx graph, and ``init`` where the reference
  initialises it otherwise than PyTorch does (the detection head's bias prior);
* flags the passes read instead of names: ``source`` (the image input), ``head``
  (a detection head), ``has_weights``, ``multi_output``, ``train_only`` (removed for
  deploy: dropout), ``fixed_size`` (an output whose size is not the input's scaled:
  adaptive pooling).

Passes, the viz, the stats, the torch backend and the importers read this table;
none of them tests an op's name (a test greps for it). The deploy transforms are
the one exception: their patterns (a BatchNorm after a conv, an add of two convs)
name the ops they match. Adding an op is one :func:`register` call in one of the
modules below, its torch lowering beside its shape rule; torch is imported only
inside lowerings, so counting and checking a spec never loads it.

A *shape* is a tuple of ints: ``(C, H, W)`` for a feature map, ``(C, A)`` for a
head's decoded output, ``(C,)`` for a vector (``flatten``, ``linear``). While a spec
is lowered only channels are known, and the spatial entries are ``None`` (but for a
map pooled to a fixed size); :mod:`gelanc.passes.shapes` fills them for an image size.
"""

from gelanc.ops.registry import REGISTRY, Attrs, OpDef, Shape, ShapeError, register

# each module registers its ops on import, in this order (the order `gelanc` lists them)
from gelanc.ops import tensor, conv, norm, activation, resample, dense, detect  # noqa: E402,F401,I001  isort: skip

__all__ = ["REGISTRY", "Attrs", "OpDef", "Shape", "ShapeError", "register"]
