"""gelanc import-yaml: model YAMLs of the reference code and of ultralytics → .gel.

The YAMLs here are written by :class:`Layers`, a small builder that takes named rows
and writes them as a model YAML does — ``[from, repeats, module, args]`` with ``-1``
for the previous layer and absolute indices otherwise — so the test describes the
reference's ten detect configs as its own text, without copying theirs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

import gelanc
from gelanc.cli import main
from gelanc.diagnostics import GelError
from gelanc.interop.refweights import export_reference, load_reference
from gelanc.interop.refyaml import convert
from gelanc.pipeline import compile_file
from gelanc.stats import model_stats

SPECS = Path(__file__).resolve().parents[1] / "specs"


class Layers:
    """Rows by name; ``src`` is a name, a list of names, or ``"x"`` for the image."""

    def __init__(self) -> None:
        self.rows: list[list] = []
        self.index: dict[str, int] = {}

    def add(self, name: str | None, module: str, args: list, src="-", n: int = 1) -> Layers:
        i = len(self.rows)

        def ref(s):
            if s == "-":
                return -1
            j = self.index[s]
            return -1 if j == i - 1 else j

        frm = [ref(s) for s in src] if isinstance(src, list) else ref(src)
        self.rows.append([frm, n, module, args])
        if name:
            self.index[name] = i
        return self

    def yaml(self, split: int, **top) -> str:
        """The file, one row a line as the reference writes them (JSON is YAML's flow style)."""
        top = {"nc": 80, "depth_multiple": 1.0, "width_multiple": 1.0, "anchors": 3, **top}
        lines = [f"{k}: {json.dumps(v)}" for k, v in top.items()]
        for section, rows in (("backbone", self.rows[:split]), ("head", self.rows[split:])):
            lines += [f"{section}:", *(f"  - {json.dumps(r)}" for r in rows)]
        return "\n".join(lines) + "\n"


def _backbone(L: Layers, stems, stage2, down, stages, depth, prefix="", fuse=None):
    """stem convs, the P2 block, then (down width, block args) for P3..P5."""
    names = []
    for k, c in enumerate(stems, 1):
        L.add(f"{prefix}s{k}", "Conv", [c, 3, 2], src="img" if k == 1 and prefix else "-")
        names.append(f"{prefix}s{k}")
    L.add(f"{prefix}b2", stage2[0], stage2[1])
    names.append(f"{prefix}b2")
    for lvl, (c, args) in enumerate(stages, 3):
        L.add(f"{prefix}d{lvl}", down, [c])
        if fuse:
            fuse(L, lvl)
        L.add(f"{prefix}b{lvl}", "RepNCSPELAN4", [*args, depth])
        names.append(f"{prefix}b{lvl}")
    return names


def _neck(L: Layers, top: str, p4: str, p3: str, spp, ups, prefix=""):
    L.add(f"{prefix}spp", "SPPELAN", spp, src=top)
    L.add(None, "nn.Upsample", [None, 2, "nearest"])
    L.add(None, "Concat", [1], src=[_last(L), p4])
    L.add(f"{prefix}u4", "RepNCSPELAN4", ups[0])
    L.add(None, "nn.Upsample", [None, 2, "nearest"])
    L.add(None, "Concat", [1], src=[_last(L), p3])
    L.add(f"{prefix}p3", "RepNCSPELAN4", ups[1])


def _last(L: Layers) -> str:
    name = f"_{len(L.rows) - 1}"
    L.index[name] = len(L.rows) - 1
    return name


def _pan(L: Layers, down, downs, blocks):
    L.add(None, down, [downs[0]], src="p3")
    L.add(None, "Concat", [1], src=[_last(L), "u4"])
    L.add("p4", "RepNCSPELAN4", blocks[0])
    L.add(None, down, [downs[1]])
    L.add(None, "Concat", [1], src=[_last(L), "spp"])
    L.add("p5", "RepNCSPELAN4", blocks[1])


def _small(k: int, dual: bool) -> str:
    """gelan-t (k = 1) and gelan-s (k = 2); yolov9's adds a second neck as its aux branch."""
    L = Layers()
    w = lambda *cs: [c * k for c in cs]  # noqa: E731
    _backbone(L, w(16, 32), ("ELAN1", w(32, 32, 16)), "AConv",
              [(64 * k, w(64, 64, 32)), (96 * k, w(96, 96, 48)), (128 * k, w(128, 128, 64))], 3)
    split = len(L.rows)
    _neck(L, "b5", "b4", "b3", w(128, 64), [[*w(96, 96, 48), 3], [*w(64, 64, 32), 3]])
    _pan(L, "AConv", w(48, 64), [[*w(96, 96, 48), 3], [*w(128, 128, 64), 3]])
    if dual:
        _neck(L, "b5", "b4", "b3", w(128, 64), [[*w(96, 96, 48), 3], [*w(64, 64, 32), 3]], prefix="a")
        L.add(None, "DualDDetect", ["nc"], src=["ap3", "au4", "aspp", "p3", "p4", "p5"])
    else:
        L.add(None, "DDetect", ["nc"], src=["p3", "p4", "p5"])
    return L.yaml(split)


def _large(size: str, dual: bool) -> str:
    """gelan-m and -c; yolov9's adds PGI's auxiliary backbone, fed by CBLinear routes."""
    m = size == "m"
    stems = (32, 64) if m else (64, 128)
    stage2 = ("RepNCSPELAN4", [128, 128, 64, 1] if m else [256, 128, 64, 1])
    down = "AConv" if m else "ADown"
    stages = ([(240, [240, 240, 120]), (360, [360, 360, 180]), (480, [480, 480, 240])] if m else
              [(256, [512, 256, 128]), (512, [512, 512, 256]), (512, [512, 512, 256])])
    L = Layers()
    if dual:
        L.add("img", "Silence", [])
    _backbone(L, stems, stage2, down, stages, 1)
    split = len(L.rows)
    top = [480, 240] if m else [512, 256]
    ups = [[360, 360, 180, 1], [240, 240, 120, 1]] if m else [[512, 512, 256, 1], [256, 256, 128, 1]]
    _neck(L, "b5", "b4", "b3", top, ups)
    _pan(L, down, [180, 240] if m else [256, 512],
         [[360, 360, 180, 1], [480, 480, 240, 1]] if m else [[512, 512, 256, 1], [512, 512, 256, 1]])
    if dual:
        widths = [c for c, _ in stages]
        for lvl in (3, 4, 5):
            L.add(f"r{lvl}", "CBLinear", [widths[: lvl - 2]], src=f"b{lvl}")

        def fuse(L, lvl):
            L.add(None, "CBFuse", [[lvl - 3] * (6 - lvl)], src=[*(f"r{j}" for j in range(lvl, 6)), _last(L)])

        _backbone(L, stems, stage2, down, stages, 1, prefix="a", fuse=fuse)
        L.add(None, "DualDDetect", ["nc"], src=["ab3", "ab4", "ab5", "p3", "p4", "p5"])
    else:
        L.add(None, "DDetect", ["nc"], src=["p3", "p4", "p5"])
    return L.yaml(split)


def _e(dual: bool) -> str:
    """gelan-e: two backbones joined by CBNet routes; yolov9-e adds a neck on the first as aux."""
    stages = [(256, [512, 256, 128]), (512, [1024, 512, 256]), (1024, [1024, 512, 256])]
    L = Layers()
    L.add("img", "Silence", [])
    _backbone(L, (64, 128), ("RepNCSPELAN4", [256, 128, 64, 2]), "ADown", stages, 2)
    widths = [64, 128, 256, 512, 1024]
    for k, src in enumerate(["s1", "b2", "b3", "b4", "b5"]):
        L.add(f"r{k}", "CBLinear", [widths[: k + 1]], src=src)

    def fuse_after(L, k):
        L.add(None, "CBFuse", [[k] * (5 - k)], src=[*(f"r{j}" for j in range(k, 5)), _last(L)])

    L.add(None, "Conv", [64, 3, 2], src="img")
    fuse_after(L, 0)
    L.add(None, "Conv", [128, 3, 2])
    fuse_after(L, 1)
    L.add("c2", "RepNCSPELAN4", [256, 128, 64, 2])
    for lvl, (c, args) in enumerate(stages, 3):
        L.add(None, "ADown", [c])
        fuse_after(L, lvl - 1)
        L.add(f"c{lvl}", "RepNCSPELAN4", [*args, 2])
    split = len(L.rows)
    if dual:
        _neck(L, "b5", "b4", "b3", [512, 256], [[512, 512, 256, 2], [256, 256, 128, 2]], prefix="a")
    _neck(L, "c5", "c4", "c3", [512, 256], [[512, 512, 256, 2], [256, 256, 128, 2]])
    _pan(L, "ADown", [256, 512], [[512, 512, 256, 2], [512, 1024, 512, 2]])
    if dual:
        L.add(None, "DualDDetect", ["nc"], src=["ap3", "au4", "aspp", "p3", "p4", "p5"])
    else:
        L.add(None, "DDetect", ["nc"], src=["p3", "p4", "p5"])
    return L.yaml(split)


def reference_yaml(model: str) -> str:
    family, size = model.split("-")
    dual = family == "yolov9"
    return _small(1 if size == "t" else 2, dual) if size in "ts" else _e(dual) if size == "e" else _large(size, dual)


ZOO = [f"{f}-{s}" for f in ("gelan", "yolov9") for s in "tsmce"]


def _convert(tmp_path: Path, text: str, name: str, **options):
    c = convert(text, str(tmp_path / f"{name}.yaml"), **options)
    path = tmp_path / f"{name}.gel"
    path.write_text(c.text)
    return c, path


@pytest.mark.parametrize("model", ZOO)
def test_reference_yamls_convert_to_specs_with_the_zoos_stats(tmp_path, model):
    c, path = _convert(tmp_path, reference_yaml(model), model)
    ours, zoo = model_stats(compile_file(path)[0]), model_stats(compile_file(SPECS / f"{model}.gel")[0])
    assert (ours["train"], ours["deploy"]) == (zoo["train"], zoo["deploy"])
    assert ours["aux_nodes"] == zoo["aux_nodes"]
    assert c.dialect == "reference"
    assert bool(c.aux_layers) == model.startswith("yolov9")
    # names, not indices: every statement assigns a name, and no layer index is read
    assert "model." not in c.text and "[-1" not in c.text


@pytest.mark.parametrize("model", ZOO)
@torch.no_grad()
def test_the_converted_spec_takes_the_yamls_checkpoints(tmp_path, model):
    """The spec's units are the YAML's layers in order: the reference's state dict of the
    zoo's model maps onto it by the same alignment, and predicts the same."""
    _, path = _convert(tmp_path, reference_yaml(model), model)
    torch.manual_seed(0)
    zoo = gelanc.compile(SPECS / f"{model}.gel", nc=3)
    converted = gelanc.compile(path, nc=3)
    state = export_reference(zoo)
    load_reference(converted, state)
    theirs = export_reference(converted)  # the YAML's own indices
    assert set(theirs) == set(state) and all(torch.equal(theirs[k], state[k]) for k in state)
    x = torch.rand(1, 3, 64, 64)
    zoo.eval(), converted.eval()
    a, b = zoo(x), converted(x)
    a, b = (a[0] if isinstance(a, tuple) else a), (b[0] if isinstance(b, tuple) else b)
    assert torch.equal(a, b)


def _ultralytics_v9(size: str) -> str:
    """ultralytics' yolov9t / yolov9e layouts: no aux branch, its Detect head, no `anchors`."""
    if size == "t":
        text = _small(1, dual=False).replace("DDetect", "Detect")
    else:
        text = _e(dual=False).replace("DDetect", "Detect").replace("Silence", "nn.Identity")
    return "\n".join(line for line in text.splitlines() if not line.startswith(("depth_", "width_", "anchors")))


@pytest.mark.parametrize("size, params, gflops", [("t", 2_128_720, 8.5), ("e", 58_206_592, 193.0)])
def test_ultralytics_yamls_count_as_ultralytics_reports(tmp_path, size, params, gflops):
    """ultralytics' yolov9t.yaml and yolov9e.yaml state their own summaries in their
    headers ("2128720 parameters, 8.5 GFLOPs"; "58206592 parameters, 193.0 GFLOPs"):
    the unfused model, so the train graph's count."""
    c, path = _convert(tmp_path, _ultralytics_v9(size), f"yolov9{size}")
    assert c.dialect == "ultralytics"
    stats = model_stats(compile_file(path)[0])
    assert stats["train"]["params"] == params
    assert round(stats["train"]["gflops"], 1) == gflops


def test_detect_follows_the_dialect(tmp_path):
    """The reference's Detect and ultralytics' differ in the class branch's width."""
    text = _ultralytics_v9("t")
    ultra = model_stats(_convert(tmp_path, text, "u")[0].graph)
    ref = model_stats(_convert(tmp_path, text, "r", dialect="reference")[0].graph)
    assert ref["train"]["params"] > ultra["train"]["params"]  # min(2·80, 128) > min(80, 100) class channels


def _tiny(**top) -> str:
    L = Layers()
    L.add("a", "Conv", [64, 3, 2]).add("b", "RepNCSPELAN4", [64, 64, 32, 3], n=top.pop("n", 1))
    L.add("c", "Conv", [100, 3, 2]).add(None, "DDetect", ["nc"], src=["b", "c"])
    return L.yaml(3, **top)


def test_width_and_depth_multiples_scale_as_the_reference_parser(tmp_path):
    c, _ = _convert(tmp_path, _tiny(width_multiple=0.25, depth_multiple=0.5, n=3), "w")
    # make_divisible(64 × 0.25, 8) = 16; 100 × 0.25 = 25 → 32; c3, c4 unscaled; 3 repeats × 0.5 → 2
    assert "Conv(x, 16, 3, 2)" in c.text and ", 32, 3, 2)" in c.text
    assert c.text.count("RepNCSPELAN4(") == 2 and "64, 32, 3)" in c.text


def test_ultralytics_scales_pick_one(tmp_path):
    scales = {"n": [0.5, 0.25, 1024], "s": [0.5, 0.5, 1024]}
    text = _tiny(scales=scales).replace("anchors: 3\n", "")
    assert "Conv(x, 32, 3, 2)" in convert(text, str(tmp_path / "m.yaml"), scale="s").text
    assert "Conv(x, 16, 3, 2)" in convert(text, str(tmp_path / "yolov8n.yaml")).text  # from the file name
    with pytest.raises(GelError, match="defines the scales n, s: choose one with --scale"):
        convert(text, str(tmp_path / "m.yaml"))


def _error(tmp_path, text: str, capsys) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = tmp_path / "bad.gel"
    assert main(["import-yaml", str(path), "-o", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_a_module_the_zoo_lacks_is_named_with_its_line(tmp_path, capsys):
    text = _tiny().replace("RepNCSPELAN4", "C2f")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "C2f" in t)
    err = _error(tmp_path, text, capsys)
    assert f"bad.yaml:{line}:" in err and "module 'C2f' has no counterpart in the zoo" in err


def test_shape_errors_point_at_the_yaml_row(tmp_path, capsys):
    L = Layers()
    L.add("a", "Conv", [16, 3, 2]).add("b", "Conv", [32, 3, 2])
    L.add(None, "Concat", [1], src=["a", "b"]).add("c", "Conv", [32, 3, 1])
    L.add(None, "DDetect", ["nc"], src=["c"])
    text = L.yaml(4)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "Concat" in t)
    err = _error(tmp_path, text, capsys)
    assert "spatial sizes differ" in err and "layers 2, 3 (Concat, Conv)" in err
    assert f"bad.yaml:{line + 1}:" in err  # the row of the Conv that reads the concat
    # the spec was not written: the note quotes its statement, and names no place in it
    assert "bad.gel" not in err and "note: in the converted statement `" in err and ", at `concat(" in err


@pytest.mark.parametrize("text, message", [
    ("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]\n", "not valid YAML"),
    ("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[0, 3], 1, DDetect, [nc]]\n",
     "layer 1 reads layer 3, which comes later"),
    ("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [16, 3, 2]]\n",
     "exactly one detection head"),
    ("nc: three\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n", "`nc`"),
    ("nc: 3\nbackbone:\n  - [-1, 1, Conv]\n", "a row is [from, repeats, module, args]"),
    ("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [0, 1, Conv, [16, 3, 2]]\n"
     "head:\n  - [[0], 1, DDetect, [nc]]\n", "layer 1 (Conv) feeds nothing"),
])
def test_bad_yamls_are_located_errors(tmp_path, capsys, text, message):
    err = _error(tmp_path, text, capsys)
    assert message in err and "bad.yaml:" in err


def test_an_error_no_row_made_names_the_yaml_not_the_unwritten_spec(tmp_path, capsys):
    # a stride of 2000 makes the network's largest stride 4000: no row's fault alone
    err = _error(tmp_path, "nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [16, 3, 2000]]\n"
                           "head:\n  - [-1, 1, DDetect, [nc]]\n", capsys)
    assert "bad.yaml: the converted network does not build: " in err and "largest stride" in err
    assert "bad.gel" not in err


def test_cli_writes_a_spec_that_builds(tmp_path, capsys, monkeypatch):
    path = tmp_path / "yolov9-c.yaml"
    path.write_text(reference_yaml("yolov9-c"))
    monkeypatch.chdir(tmp_path)
    assert main(["import-yaml", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == "yolov9-c.gel" and (tmp_path / "yolov9-c.gel").is_file()
    assert summary["deploy"]["params"] == model_stats(compile_file(SPECS / "gelan-c.gel")[0])["deploy"]["params"]
    assert summary["aux_layers"] and summary["layers"] == len(yaml.safe_load(path.read_text())["head"]) + \
        len(yaml.safe_load(path.read_text())["backbone"])
    assert main(["check", "yolov9-c.gel"]) == 0
    capsys.readouterr()
    assert main(["import-yaml", str(path), "-o", "-"]) == 0
    text = capsys.readouterr().out
    assert text.startswith('import "zoo/blocks.gel"')
    assert main(["import-yaml", str(path), "-o", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == text


@pytest.mark.parametrize("row, message", [
    ("  - [[], 1, Concat, [1]]", "`from` lists no layer"),
    ("  - [[0, 1], 2, Concat, [1]]", "cannot be chained"),
])
def test_rows_the_converter_cannot_take_are_located(tmp_path, capsys, row, message):
    text = f"nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [16, 3, 1]]\n{row}\n" \
           "head:\n  - [[-1], 1, DDetect, [nc]]\n"
    err = _error(tmp_path, text, capsys)
    assert message in err and "bad.yaml:5:" in err


# ---- what a model YAML may ask for (gelanc/limits.py, "model YAMLs") -----------------


def _rows(rows: list[str], head: str = "  - [-1, 1, DDetect, [nc]]", top: str = "nc: 3\n") -> str:
    return top + "backbone:\n" + "\n".join(rows) + "\nhead:\n" + head + "\n"


CONV = "  - [-1, 1, Conv, [16, 3, 2]]"


@pytest.mark.parametrize("text, line, message", [
    # 1,000 copies of one row: refused by the row's count, not after writing a spec of 1,000 statements
    (_rows([CONV, "  - [-1, 1000, RepNCSPELAN4, [64, 64, 32, 1]]"]), 4,
     "layer 1 (RepNCSPELAN4): 1,000 repeats; a row may repeat at most 100 times (MAX_YAML_REPEATS"),
    # the bound holds after the depth multiple: 60 × 2 = 120 copies
    (_rows([CONV, "  - [-1, 60, RepNCSPELAN4, [64, 64, 32, 1]]"], top="nc: 3\ndepth_multiple: 2.0\n"), 5,
     "120 repeats (60 × depth 2)"),
    (_rows([CONV] * 1001), 1003, "layer 1000: a model YAML may list at most 1,000 layers (MAX_YAML_ROWS"),
    (_rows([CONV, "  - [[" + ", ".join(["0"] * 65) + "], 1, Concat, [1]]"]), 4,
     "layer 1: `from` lists 65 layers; a row may read at most 64 (MAX_YAML_FROM"),
    (_rows([CONV, "  - [-1, 1, CBLinear, [[" + ", ".join(["8"] * 64) + "]]]"]), 4,
     "layer 1: its args hold more than 64 elements, nested lists' counted (MAX_YAML_ARGS"),
    (_rows([CONV, "  - [-1, 1, Conv, [10000000, 3, 2]]"]), 4, "argument 10000000 is over 1,048,576"),
    (_rows([CONV, "  - [-1, 10000000, Conv, [16, 3, 2]]"]), 4, "10000000 repeats is over 1,048,576"),
    (_rows([CONV], top="nc: 3\nwidth_multiple: .inf\n"), 2, "`width_multiple`: Input should be less than or equal"),
    (_rows([CONV], top="nc: 10000000\n"), 1, "`nc`: Input should be less than or equal to 1048576"),
], ids=["repeats", "scaled-repeats", "rows", "from", "args", "argument", "raw-repeats", "multiple", "nc"])
def test_what_a_model_yaml_may_ask_for_is_bounded_at_its_row(tmp_path, capsys, text, line, message):
    err = _error(tmp_path, text, capsys)
    assert message in err and f"bad.yaml:{line}:" in err, err


def test_a_model_yaml_over_its_byte_bound_is_refused_before_parsing(tmp_path, capsys, monkeypatch):
    import gelanc.interop.yaml_rows as yaml_rows

    monkeypatch.setattr(yaml_rows, "compose", lambda text: pytest.fail("parsed a file over the bound"))
    text = _rows([CONV] * 2300)  # 2,300 rows of 30 bytes: over 64 KiB, under the reader's 1 MiB
    assert 64 << 10 < len(text) < 1 << 20
    err = _error(tmp_path, text, capsys)
    assert f"bad.yaml is {len(text):,} bytes; a model YAML may be at most 65,536 (MAX_MODEL_YAML_BYTES" in err


def test_a_spec_past_its_byte_bound_stops_at_the_row_that_passes_it(tmp_path, capsys):
    # 999 rows and 100 copies of each, every row within its bounds: the spec being written passes 32 KiB
    rows = [CONV] + ["  - [-1, 100, Conv, [16, 3, 1]]"] * 998
    err = _error(tmp_path, _rows(rows), capsys)
    assert "the converted spec passes 32,768 bytes here" in err and "(MAX_SPEC_BYTES)" in err
    line = int(re.search(r"bad\.yaml:(\d+):", err).group(1))
    assert 3 < line < 20  # one of the first rows: ~48 bytes a copy, 100 copies a row


@pytest.mark.parametrize("text, message", [
    # a module name of 20,000 characters, and a comment of 40,000 on its line
    (_rows([CONV + "  # " + "x" * 40_000, "  - [-1, 1, " + "Q" * 20_000 + ", [16]]"]), "has no counterpart in the zoo"),
    (_rows([CONV, "  - [-1, 1, Conv, [" + "7" * 4000 + ", 3, 2]]"]), "is over 1,048,576"),
    (_rows([CONV, "  - [-1, 1, Conv, [" + "7" * 5000 + ", 3, 2]]"]), "not valid YAML: an integer of thousands"),
    (_rows([CONV, "  - [-1, 1, Conv, [16, 3, 2, '" + "s" * 30_000 + "']]"]), "has no .gel form"),
    (_rows([CONV, "  - [-1, 1, Conv, [16, 3, 2]]"], top="nc: 3\nscales: {" + ", ".join(
        f"k{i}{'z' * 200}: [1, 1]" for i in range(100)) + "}\n"), "choose one with --scale"),
    (_rows([CONV, "  - [-1, 1, Conv, [16, 3, 2]]"], top="nc: 3\nactivation: " + "A" * 30_000 + "\n"),
     "the zoo's blocks use SiLU only"),
], ids=["module-and-comment", "argument", "digits", "string-argument", "scales", "activation"])
def test_no_message_quotes_a_file_at_length(tmp_path, capsys, text, message):
    err = _error(tmp_path, text, capsys)
    assert message in err, err[:500]
    assert len(err) < 1500 and max(len(line) for line in err.splitlines()) < 400, err[:500]


@pytest.mark.parametrize("row, message", [
    ("  - [-1, 1, nn.Upsample, [None, 0, nearest]]", "upsample: argument 'scale'"),  # no division by zero
    ("  - [-1, 1, nn.Upsample, [None, false, nearest]]", "upsample"),
    ("  - [-1, 1, Conv, [16, 3, 0]]", "bad.yaml:"),
])
def test_strides_a_yaml_gets_wrong_are_located_errors_not_crashes(tmp_path, capsys, row, message):
    text = _rows([CONV, row, CONV])
    err = _error(tmp_path, text, capsys)
    assert message in err and "error:" in err, err


def test_huge_strides_are_an_error_not_an_overflow(tmp_path, capsys):
    # 2²⁰ a row: the strides multiply to 2^(20·n), past any float, then an upsample divides them
    rows = ["  - [-1, 1, Conv, [16, 3, 1048576]]"] * 100 + ["  - [-1, 1, nn.Upsample, [None, 2, nearest]]", CONV]
    err = _error(tmp_path, _rows(rows), capsys)
    assert "bad.yaml:" in err and "error:" in err and "Overflow" not in err


def test_a_concat_passed_through_identities_is_named_not_copied_into_each_reader(tmp_path):
    """Each level reads the last Concat, through an nn.Identity, 8 times. Folded into its
    readers as the expression of a Concat read once, it would be copied 8 times a level
    (8⁴ copies of the first one here; 64⁶ a few KB of YAML could ask for)."""
    rows = [CONV, "  - [[0, 0], 1, Concat, [1]]"]
    for _ in range(4):
        rows += ["  - [-1, 1, nn.Identity, []]", "  - [[" + ", ".join([str(len(rows))] * 8) + "], 1, Concat, [1]]"]
    rows.append("  - [-1, 1, Conv, [16, 1, 1]]")
    c = convert(_rows(rows), str(tmp_path / "m.yaml"))
    assert c.text.count("concat(") == 5  # one a Concat row


def test_one_long_statement_does_not_push_every_comment_out(tmp_path):
    rows = [CONV, "  - [-1, 1, Conv, [16, 3, 1]]", "  - [[" + ", ".join(["0", "1"] * 20) + "], 1, Concat, [1]]",
            "  - [-1, 1, Conv, [16, 1, 1]]"]
    lines = convert(_rows(rows), str(tmp_path / "m.yaml")).text.splitlines()
    long = [ln for ln in lines if "concat(" in ln]
    assert len(long) == 1 and len(long[0]) > 200
    assert all(len(ln) < 120 for ln in lines if ln not in long)


def test_import_yaml_refuses_its_output_before_converting(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    path = tmp_path / "m.yaml"
    path.write_text(_rows([CONV, "  - [-1, 1, C2f, [16]]"]))  # converting would fail on C2f
    assert main(["import-yaml", str(path), "-o", str(tmp_path / "afile" / "m.gel")]) == 2
    err = capsys.readouterr().err
    assert err == f"gelanc: error: cannot write {tmp_path / 'afile' / 'm.gel'}: {tmp_path / 'afile'} is a file, " \
                  f"not a folder\n"

