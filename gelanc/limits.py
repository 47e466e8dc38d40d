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
MAX_PARAMS = 500_000_000  # parameters of one network (2 GB in float32; yolov9-e has 70 M) before any is allocated
MAX_IMGSZ = 4096  # the side of a network's input, given or stored in a checkpoint
MAX_BATCH = 1024  # images in a training or validation batch (the reference's largest recipes use 256)
MAX_WORKERS = 64  # data-loading processes per rank
MAX_ACTIVATIONS = 1 << 32  # elements of all of one image's intermediate tensors, summed (16 GB in float32)

# ---- checkpoints -------------------------------------------------------------------
MAX_CHECKPOINT_BYTES = 8 << 30  # a checkpoint file (yolov9-e's training last.pt: ~0.8 GB)
MAX_PICKLE_BYTES = 64 << 20  # the pickled structure beside the tensors' data

# ---- data --------------------------------------------------------------------------
# width × height declared by an image's header: 8,192², 67 M pixels — above a 50-megapixel camera's
# frames and every common detection dataset's images. Decoding one image at this bound peaks at
# ~0.4 GB above the process's own memory (JPEG, PNG, TIFF; GIF 0.2 GB; WebP 0.9 GB: libwebp holds
# the picture twice more), the 200 MB result included — per data-loading worker (docs/data.md,
# "Bounds", has the measurements). PIL refuses on its own past twice its bound (178 M pixels), and
# warns past its bound (89 M): this figure sits under both, so it is the one that holds.
MAX_IMAGE_PIXELS = 1 << 26
# an image file's bytes: the largest image allowed above, stored uncompressed at 16 bits per channel
# with alpha (a TIFF or BMP), is 537 MB; a file bigger than twice that is not an image gelanc will read.
MAX_IMAGE_BYTES = 1 << 30
MAX_LABEL_BYTES = 4 << 20  # one YOLO label file
MAX_DATA_YAML_BYTES = 1 << 20  # a data.yaml, a --hyp file or a model YAML
# images in one split, from folders, lists or a COCO file: the largest public detection sets have
# fewer (Open Images V7 and Objects365: ~1.74 M training images; COCO: 118 k). Each costs its path,
# its labels and its checks; docs/data.md ("Bounds") has what a split at this bound costs.
MAX_SPLIT_IMAGES = 2_000_000
# one .txt list of image paths: MAX_SPLIT_IMAGES paths of 128 bytes on average
MAX_IMAGE_LIST_BYTES = 256 << 20
# one COCO instances JSON (COCO's instances_train2017.json: 448 MB), and what parsing it may build:
# Python holds ~25 bytes for each byte of `[{},{},…]`, so the bytes alone do not bound the memory.
# Counted before parsing, as upper bounds: values by the commas, brackets and braces in the file;
# objects and arrays by the brackets and braces. A file like COCO's train2017 has 54 M and 3.6 M.
MAX_COCO_JSON_BYTES = 1 << 30
MAX_COCO_JSON_VALUES = 1 << 27
MAX_COCO_JSON_CONTAINERS = 1 << 24

# ---- model YAMLs (gelanc import-yaml) ----------------------------------------------
# A model YAML's rows become .gel statements: these bound what it may ask for before any
# row is converted; passing one is a located error at its row. The reference's largest,
# yolov9-e.yaml, is 3.4 KB with 50 rows, repeats of 1, `from` lists of at most 6 layers,
# at most 6 argument elements and widths of at most 1,024; ultralytics' have fewer rows,
# repeats ≤ 9 after depth scaling and multiples ≤ 1.25. PyYAML reads ~6 µs a byte, so a
# file at the byte bound is read in well under a second; the spec being written is held
# to MAX_SPEC_BYTES statement by statement (docs/migrate.md, "Bounded").
MAX_MODEL_YAML_BYTES = 64 << 10  # one model YAML, checked before it is parsed (yolov9-e: 3.4 KB)
MAX_YAML_ROWS = 1_000  # backbone and head rows together (yolov9-e: 50)
MAX_YAML_REPEATS = 100  # copies of one row, after the depth multiple (the reference: 1; ultralytics: ≤ 9)
MAX_YAML_FROM = 64  # layers one row's `from` lists (DualDDetect: 6)
MAX_YAML_ARGS = 64  # elements of one row's args, those of nested lists counted (yolov9-e: 6)
MAX_YAML_INT = 1 << 20  # magnitude of any integer in a row, and of `nc` (widths: ≤ 1,024)
MAX_YAML_MULTIPLE = 64.0  # depth and width multiples, and ultralytics' scales (≤ 1.25)
