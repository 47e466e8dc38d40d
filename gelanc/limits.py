"""What a file handed to gelanc may ask of it: every bound, in one place.

gelanc reads specs, checkpoints, images, label files and YAMLs that come from
anywhere (docs/architecture.md, "Threat model"). Each of them can ask for memory or
time: a spec by its loops and widths, a checkpoint by the tensors and the spec it
declares, an image by the size in its header. These bounds keep what any file can
make gelanc do finite and small; passing one is a clear, located user error (exit 2)
that names the limit, raised before the memory is allocated or the time is spent.

The figures sit far above anything real — the largest zoo model, yolov9-e, has
69 M parameters in its train graph, ~1,600 ops and its spec is 5 KB — and far below
what would hurt a 2-core, 24 GB machine.
"""

from __future__ import annotations

# ---- .gel specs -------------------------------------------------------------------
# A spec is a program; these bound what running it may cost. Each figure sits about 3×
# to 8× above the largest zoo program (specs/, specs/figures/, zoo/; the most demanding
# is specs/figures/gelan.gel, a 200-block stack), and a spec at any one bound checks
# in about a second on the 2-core reference machine, in under 200 MB (docs/language.md,
# "Limits", has the measurements: lark parses a token-dense file at ~13 µs a byte,
# lowering costs ≤ 1 µs a step and ~30 µs an op). MAX_NODES has the least room, 2.8×:
# far above the 200-block figure, a spec at the bound could not check in a second.
MAX_SPEC_BYTES = 32 << 10  # one .gel file, or one embedded in a checkpoint; checked before parsing (zoo: 7 KB)
MAX_PROGRAM_BYTES = 64 << 10  # a spec and everything it imports, together (zoo: 9.4 KB)
MAX_SPEC_FILES = 64  # import statements one program runs, those in imported files counted (zoo: 2)
MAX_EVAL_STEPS = 1_000_000  # expressions, loop turns, list elements and op inputs one lowering evaluates (zoo: 133,000)
MAX_LIST_LEN = 10_000  # elements of one list or indexed name, nested ones counted; steps of one range() (zoo: 200)
MAX_LIST_DEPTH = 16  # lists inside lists: walks over a value (flatten, compare, repr) recurse this deep (zoo: 1)
MAX_INT = 1 << 53  # magnitude of any number a spec writes or computes; exact as a float too (zoo: 5.7e7)
MAX_NODES = 30_000  # ops in one graph (zoo: 10,804)
MAX_EDGES = 60_000  # inputs of all the ops in one graph, a tensor read twice counted twice (zoo: 12,600)
MAX_BLOCK_DEPTH = 64  # block calls nested inside one another (zoo: 5)

# ---- networks that gelanc builds in torch ------------------------------------------
MAX_PARAMS = 2_000_000_000  # parameters of one network (8 GB in float32) before any is allocated
MAX_IMGSZ = 4096  # the side of a network's input, given or stored in a checkpoint
MAX_ACTIVATIONS = 1 << 32  # elements of all of one image's intermediate tensors, summed (16 GB in float32)

# ---- checkpoints -------------------------------------------------------------------
MAX_CHECKPOINT_BYTES = 8 << 30  # a checkpoint file (yolov9-e's training last.pt: ~0.8 GB)
MAX_PICKLE_BYTES = 64 << 20  # the pickled structure beside the tensors' data

# ---- data --------------------------------------------------------------------------
# width × height declared by an image's header (about 11,585²; 400 MB as 8-bit RGB once decoded).
# PIL refuses, with its own DecompressionBombError, anything over twice its own bound (178 M pixels
# by default) before gelanc could look at it: this figure sits under that, so it is the one that holds.
MAX_IMAGE_PIXELS = 1 << 27
# an image file's bytes: the largest image allowed above, stored uncompressed at 16 bits per channel
# with alpha (a TIFF or BMP), is 1.07 GB; a file bigger than that is not an image gelanc will read.
MAX_IMAGE_BYTES = 2 << 30
MAX_LABEL_BYTES = 4 << 20  # one YOLO label file
MAX_DATA_YAML_BYTES = 1 << 20  # a data.yaml, a --hyp file or a model YAML
