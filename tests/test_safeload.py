"""Hostile checkpoint files: nothing in them runs, nothing they declare is allocated unchecked.

The malicious files are built here, byte by byte where pickle would not write them:
a payload (``posix.system``, ``builtins.eval``, a ``getattr`` chain to ``os.system``)
in every record of the legacy format, in the zip format's pickle, and in every part
of a gelanc checkpoint. Each must be refused by every command that reads a
checkpoint, and a marker file proves that nothing ran.
"""

import io
import pickle
import pickletools
import struct
import sys
import types
import zipfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gelanc
from gelanc import safeload
from gelanc.backend.checkpoint import CheckpointError, read
from gelanc.cli import main
from gelanc.diagnostics import GelError
from gelanc.interop import refckpt

NOBN = "tests/specs/nobn.gel"


# ---- building payloads ------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _call(func: bytes, *args: bytes) -> bytes:
    """Pickle opcodes that call ``func(*args)`` and leave the result on the stack."""
    return func + b"(" + b"".join(args) + b"tR"


PAYLOADS = {
    "posix.system": lambda cmd: _call(_global("posix", "system"), _str(cmd)),
    "builtins.eval": lambda cmd: _call(_global("builtins", "eval"), _str(f"__import__('os').system({cmd!r})")),
    "builtins.getattr": lambda cmd: _call(
        _call(_global("builtins", "getattr"), _call(_global("builtins", "__import__"), _str("os")), _str("system")),
        _str(cmd)),
}


def whole(expr: bytes) -> bytes:
    return b"\x80\x02" + expr + b"."


# A placeholder pickled by reference, so a payload can be spliced into any structure
# that torch.save or pickle writes: its GLOBAL … REDUCE is replaced by the payload.
_holes = types.ModuleType("gelanc_test_holes")


class Hole:
    def __reduce__(self):
        return (_holes.HOLE, ())


def _hole_fn():
    raise AssertionError("never called")


_hole_fn.__module__, _hole_fn.__qualname__ = "gelanc_test_holes", "HOLE"
_holes.HOLE = _hole_fn
sys.modules["gelanc_test_holes"] = _holes


def splice(pkl: bytes, expr: bytes) -> bytes:
    """``pkl`` (one Hole in it) with the Hole's GLOBAL … REDUCE replaced by ``expr``."""
    start = pkl.index(_global("gelanc_test_holes", "HOLE"))
    end = pkl.index(b")R", start) + 2  # the empty argument tuple and the REDUCE (a memo put may sit between)
    return pkl[:start] + expr + pkl[end:]


def legacy_records(obj) -> tuple[list[bytes], bytes]:
    """A legacy torch file of ``obj`` as its five pickles (magic, protocol, sys info,
    object, storage keys) and the raw storages after them."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    data, pos, records = buf.getvalue(), 0, []
    for _ in range(5):
        stop = list(pickletools.genops(io.BytesIO(data[pos:])))[-1][2]
        records.append(data[pos:pos + stop + 1])
        pos += stop + 1
    return records, data[pos:]


def zip_with(template: bytes, pkl: bytes) -> bytes:
    """The torch zip archive ``template`` with its data.pkl replaced by ``pkl``."""
    src, out = zipfile.ZipFile(io.BytesIO(template)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, pkl if info.filename.endswith("/data.pkl") else src.read(info))
    return out.getvalue()


def zip_pickle(data: bytes) -> bytes:
    z = zipfile.ZipFile(io.BytesIO(data))
    return z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def gelanc_ckpt(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ckpt") / "nobn.pt"
    gelanc.save(gelanc.compile(NOBN, nc=2), path, names=["a", "b"], train={"args": {"imgsz": 64}})
    return path.read_bytes()


def _positions(gelanc_bytes: bytes, expr: bytes) -> dict[str, bytes]:
    """The same payload in every record position a checkpoint file has."""
    out = {}
    records, storages = legacy_records({"model": torch.ones(3), "epoch": 1})
    for i, what in enumerate(["magic", "protocol", "sysinfo", "object", "storage-keys"]):
        parts = list(records)
        parts[i] = whole(expr)
        out[f"legacy-{what}"] = b"".join(parts) + storages
    records, storages = legacy_records({"model": torch.ones(3), "opt": Hole()})
    records[3] = splice(records[3], expr)
    out["legacy-nested"] = b"".join(records) + storages
    template = saved({"model": torch.ones(3), "epoch": 1})
    out["zip-whole"] = zip_with(template, whole(expr))
    out["zip-nested"] = zip_with(template, splice(zip_pickle(saved({"w": torch.ones(3), "x": Hole()})), expr))
    # a storage type that is a call: ('storage', <payload>, key, location, size)
    pkl = zip_pickle(template)
    out["zip-storage-type"] = zip_with(template, pkl.replace(_global("torch", "FloatStorage"), expr, 1))
    good = zip_pickle(gelanc_bytes)
    for where, old in {
        "gelanc-meta": b"X\x05\x00\x00\x00model",  # the first key of meta
        "gelanc-state-dict": b"X\x0a\x00\x00\x00state_dict",
        "gelanc-names": b"X\x05\x00\x00\x00names",
        "gelanc-train": b"X\x05\x00\x00\x00train",
    }.items():
        i = good.index(old) + len(old)
        # the key's memo put, then the payload as an extra value pushed before the real one: an
        # unpickler that runs it gets an odd stack later, but only after the payload ran
        j = i + 2 if good[i:i + 1] == b"q" else i + 5
        out[where] = zip_with(gelanc_bytes, good[:j] + expr + b"0" + good[j:])  # "0": POP the payload's result
    return out


# ---- the payloads are live -----------------------------------------------------------------


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_the_payloads_would_run_under_plain_pickle(tmp_path, kind):
    """Without this, the refusal tests below could pass on payloads that never worked."""
    flag = tmp_path / "ran"
    pickle.loads(whole(PAYLOADS[kind](f"touch {flag}")))
    assert flag.exists()


def test_the_spliced_gelanc_checkpoint_runs_under_plain_torch_load(tmp_path, gelanc_ckpt):
    flag = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(_positions(gelanc_ckpt, PAYLOADS["posix.system"](f"touch {flag}"))["gelanc-state-dict"])
    torch.load(path, weights_only=False)
    assert flag.exists()


# ---- refused everywhere ----------------------------------------------------------------------


def _commands(path, tmp_path, image):
    return {
        "import-weights": ["import-weights", str(path), "--spec", NOBN, "-o", str(tmp_path / "out.pt")],
        "val": ["val", str(path), "--data", str(tmp_path / "none.yaml")],
        "predict": ["predict", str(path), str(image), "-o", str(tmp_path / "pred")],
        "export": ["export", str(path), "--format", "onnx", "-o", str(tmp_path / "m.onnx")],
        "export-weights": ["export-weights", str(path), "-o", str(tmp_path / "w.pt")],
    }


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    p = tmp_path_factory.mktemp("img") / "x.png"
    Image.new("RGB", (64, 64), (90, 120, 30)).save(p)
    return p


@pytest.mark.parametrize("kind", list(PAYLOADS))
def test_a_payload_in_any_position_is_refused_by_every_reader(tmp_path, capsys, kind, gelanc_ckpt, image):
    flag = tmp_path / "ran"
    files = _positions(gelanc_ckpt, PAYLOADS[kind](f"touch {flag}"))
    assert len(files) == 13
    for where, data in files.items():
        path = tmp_path / f"{where}.pt"
        path.write_bytes(data)
        for name, argv in _commands(path, tmp_path, image).items():
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2, (where, name, err)
            assert f"asks to call {kind}" in err and "Traceback" not in err, (where, name, err)
            assert "weights_only=False" not in err and "\x1b" not in err
        with pytest.raises(safeload.UnsafePickle, match=f"asks to call {kind}"):
            gelanc.load(path)
        with pytest.raises(safeload.UnsafePickle):
            refckpt.read(path)
        assert not flag.exists(), where
    assert not any(p.name in ("out.pt", "m.onnx", "w.pt", "pred") for p in tmp_path.iterdir())


def test_a_class_of_foreign_code_is_refused_in_a_gelanc_checkpoint(tmp_path):
    """Records are for reference checkpoints: gelanc's own hold data only."""
    path = tmp_path / "m.pt"
    torch.save({"format": "gelanc-checkpoint", "version": 1, "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(safeload.UnsafePickle, match="torch.nn.modules.linear.Linear"):
        read(path)
    assert isinstance(refckpt.read(path)["model"], refckpt.Record)  # …and read as a record from the reference


def test_a_legacy_reference_checkpoint_reads_as_records(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "legacy.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path, _use_new_zipfile_serialization=False)
    got = refckpt.read(path)
    assert got["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(got["model"][k], v)


def test_names_in_a_refusal_are_printable(tmp_path):
    path = tmp_path / "x.pt"
    path.write_bytes(whole(_call(_global("posix\x1b[31m", "system" + "x" * 500), _str("true"))))
    with pytest.raises(safeload.UnsafePickle) as e:
        safeload.read(path)
    assert "\x1b" not in str(e.value) and len(str(e.value)) < len(str(path)) + 200


# ---- sizes: what a file declares is checked against what it holds -----------------------------


def test_a_legacy_storage_larger_than_the_file_is_refused_before_allocation(tmp_path, monkeypatch):
    records, storages = legacy_records({"w": torch.ones(3)})
    # declare 10^12 elements; the file holds 3
    records[3] = records[3].replace(b"K\x03N", b"\x8a\x06" + (10**12).to_bytes(6, "little") + b"N")
    path = tmp_path / "bomb.pt"
    path.write_bytes(b"".join(records) + storages)

    def no_allocation(*a, **k):
        raise AssertionError("a storage was allocated")

    monkeypatch.setattr(torch, "UntypedStorage", no_allocation)
    with pytest.raises(CheckpointError, match="does not hold the size its pickle declares"):
        safeload.read(path)


def test_a_zip_storage_larger_than_its_member_is_refused(tmp_path):
    template = saved({"w": torch.ones(3)})
    pkl = zip_pickle(template).replace(b"K\x03tq", b"J\x00\x00\x00\x40tq")  # 2^30 elements declared
    path = tmp_path / "bomb.pt"
    path.write_bytes(zip_with(template, pkl))
    with pytest.raises(CheckpointError, match="declares 4294967296 bytes but the archive holds 12"):
        safeload.read(path)


def test_a_tensor_past_the_end_of_its_storage_is_refused(tmp_path):
    template = saved({"w": torch.ones(3)})
    pkl = zip_pickle(template)
    stop = pkl.index(b"K\x00K\x03\x85")  # offset 0, size (3,)
    path = tmp_path / "view.pt"
    path.write_bytes(zip_with(template, pkl[:stop] + b"K\x00M\x00\x10\x85" + pkl[stop + 5:]))  # size (4096,)
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        safeload.read(path)


def test_the_tar_format_and_other_files_are_refused(tmp_path):
    import tarfile

    tar = tmp_path / "old.pt"
    with tarfile.open(tar, "w") as t:
        info = tarfile.TarInfo("pickle")
        t.addfile(info, io.BytesIO(b""))
    for path, why in [(tar, "tar format"), (tmp_path / "missing.pt", "no such checkpoint"), (tmp_path, "folder")]:
        with pytest.raises(CheckpointError, match=why):
            safeload.read(path)
    text = tmp_path / "a.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="neither a torch zip archive nor"):
        safeload.read(text)


# ---- what a valid file asks of gelanc ----------------------------------------------------------


def _rewrite(gelanc_bytes: bytes, tmp_path, change) -> str:
    path = tmp_path / "x.pt"
    path.write_bytes(gelanc_bytes)
    ckpt = read(path)
    change(ckpt)
    torch.save(ckpt, path)
    return str(path)


HUGE_SPEC = """
model huge(nc: int = 2) {
    x = input(3)
    y = conv2d(x, 50000, 7, 2)
    return detect([conv2d(conv2d(y, 50000, 3, 2), 66, 1), conv2d(conv2d(conv2d(y, 64, 3, 2), 64, 3, 2), 66, 1),
                   conv2d(conv2d(conv2d(conv2d(y, 64, 3, 2), 64, 3, 2), 64, 3, 2), 66, 1)], nc)
}
"""


def test_an_embedded_spec_cannot_ask_for_more_weights_than_the_file_holds(tmp_path, gelanc_ckpt, monkeypatch):
    from gelanc.backend import fx as torch_fx

    def spec(c):
        c["meta"].update(model="huge", root="huge.gel", sources={"huge.gel": HUGE_SPEC}, links={}, params={})

    path = _rewrite(gelanc_ckpt, tmp_path, spec)
    monkeypatch.setattr(torch_fx._Builder, "build", lambda *a: pytest.fail("the network was allocated"))
    with pytest.raises(CheckpointError, match="asks for more parameters than the .* values it holds"):
        gelanc.load(path)


def test_an_embedded_spec_cannot_ask_for_huge_feature_maps(tmp_path, capsys, gelanc_ckpt, image):
    """Same weights, one upsampling ×64 at the input: 36.8 G values a forward pass at 640."""
    def spec(c):
        root = c["meta"]["root"]
        c["meta"]["sources"][root] = c["meta"]["sources"][root].replace("x = input(3)", "x = upsample(input(3), 64)")
        c["train"]["args"]["imgsz"] = 640

    path = _rewrite(gelanc_ckpt, tmp_path, spec)
    for argv in (["predict", path, str(image), "-o", str(tmp_path / "p")], ["val", path, "--data", "none.yaml"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "image size 640: at 640×640 one image's feature maps would hold 36,835,737,600 values" in err, err


@pytest.mark.parametrize("imgsz, why", [(32000, "over gelanc's limit of 4096"), ("640", "positive integer"),
                                        (-64, "positive integer")])
def test_a_stored_image_size_is_checked_before_use(tmp_path, capsys, gelanc_ckpt, image, imgsz, why):
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c["train"]["args"].update(imgsz=imgsz))
    for argv in (["predict", path, str(image), "-o", str(tmp_path / "p")], ["val", path]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err


def _flatten_first(state: dict) -> None:
    k = next(k for k, v in state.items() if v.shape == (16, 3, 3, 3))  # the stem's kernel
    state[k] = state[k].flatten()


@pytest.mark.parametrize("change, why", [
    (lambda c: c.update(state_dict=[1, 2]), "state_dict: Input should be a valid dictionary"),
    (lambda c: c.update(meta="yolov9"), "meta: Input should be a valid dictionary"),
    (lambda c: c["meta"].update(sources=7), "meta.sources"),
    (lambda c: c.update(names=[1, 2]), "names.0: Input should be a valid string"),
    (lambda c: c.update(names=["\x1b[2J"]), "names.0: a class name must be 1 to 200 printable"),
    (lambda c: c.update(train=[]), "train: Input should be a valid dictionary"),
    (lambda c: c.update(train={"args": "x"}), "train: the run's settings must be a mapping"),
    (lambda c: _flatten_first(c["state_dict"]), "in the file; the embedded spec needs 16×3×3×3"),
    (lambda c: c["state_dict"].update(renamed=c["state_dict"].pop(next(iter(c["state_dict"])))),
     "weights do not fit the embedded spec (missing ['detect.conv.weight'], unexpected ['renamed'])"),
])
def test_a_checkpoint_of_the_wrong_structure_is_a_user_error(tmp_path, capsys, gelanc_ckpt, image, change, why):
    path = _rewrite(gelanc_ckpt, tmp_path, change)
    for argv in (["predict", path, str(image), "-o", str(tmp_path / "p")], ["export-weights", path, "-o",
                                                                           str(tmp_path / "w.pt")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert why in err and "Traceback" not in err, err


@pytest.mark.parametrize("obj", [[1, 2], "gelanc-checkpoint", 7, None])
def test_a_checkpoint_that_is_not_a_dict(tmp_path, capsys, obj):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    assert main(["val", str(path)]) == 2
    assert "not a gelanc checkpoint" in capsys.readouterr().err


# ---- fuzzing the bytes of valid files ------------------------------------------------------------


def _mutations():
    flips = st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=8)
    return st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, 10**9)),
        st.tuples(st.just("flip"), flips),
        st.tuples(st.just("swap"), st.tuples(st.integers(0, 10**9), st.integers(0, 10**9))),
    )


def _mutate(data: bytes, records: list[bytes] | None, m) -> bytes:
    kind, arg = m
    if kind == "truncate":
        return data[:arg % len(data)]
    if kind == "flip":
        b = bytearray(data)
        for pos, bit in arg:
            b[pos % len(b)] ^= 1 << bit
        return bytes(b)
    if records:  # legacy: two of its records swapped
        i, j = (a % len(records) for a in arg)
        r = list(records)
        r[i], r[j] = r[j], r[i]
        return b"".join(r)
    z = zipfile.ZipFile(io.BytesIO(data))  # zip: two members' contents swapped
    names = z.namelist()
    i, j = (names[a % len(names)] for a in arg)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for n in names:
            w.writestr(n, z.read(j if n == i else i if n == j else n))
    return out.getvalue()


@pytest.fixture(scope="module")
def fuzz_targets(gelanc_ckpt):
    records, storages = legacy_records({"model": torch.nn.Conv2d(2, 2, 1).state_dict(), "epoch": 2})
    return {"gelanc": (gelanc_ckpt, None), "legacy": (b"".join(records) + storages, records + [storages])}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from(["gelanc", "legacy"]), m=_mutations())
def test_mutated_checkpoints_never_crash_or_run_anything(tmp_path, fuzz_targets, target, m):
    data, records = fuzz_targets[target]
    path = tmp_path / "fuzz.pt"
    path.write_bytes(_mutate(data, records, m))
    for reader in (refckpt.read, gelanc.load):
        try:
            reader(path)
        except (CheckpointError, GelError):
            pass


# ---- the label cache ships with a dataset: it is a foreign file too -----------------------------


def test_a_hostile_label_cache_is_ignored_and_rebuilt(tmp_path):
    from gelanc.data.dataset import cache_file, image_files, scan
    from gelanc.data.synth import write

    data = write(tmp_path / "d", images=3, val=1, size=32, seed=0)
    images = image_files([data.parent / "images" / "train"])
    cache = cache_file(images)
    good = scan(images, nc=4, cache=cache)
    entry = safeload.read(cache)

    entry["labels"][0] = torch.tensor([[99.0, 0.5, 0.5, 0.2, 0.2]])  # the right key, a class the data does not have
    torch.save(entry, cache)
    assert [t.tolist() for t in scan(images, nc=4, cache=cache).labels] == [t.tolist() for t in good.labels]

    flag = tmp_path / "ran"
    records, storages = legacy_records({"key": entry["key"], "x": Hole()})
    records[3] = splice(records[3], PAYLOADS["posix.system"](f"touch {flag}"))
    cache.write_bytes(b"".join(records) + storages)
    assert [t.tolist() for t in scan(images, nc=4, cache=cache).labels] == [t.tolist() for t in good.labels]
    assert not flag.exists()
    assert safeload.read(cache)["key"] == entry["key"]  # rebuilt: a cache of ours again


# ---- found by the second round of adversarial testing -------------------------------------------


def test_a_huge_memo_index_costs_nothing(tmp_path):
    """One LONG_BINPUT of index 2^28 made the C unpickler allocate 2 GB for its memo."""
    path = tmp_path / "memo.pt"
    path.write_bytes(whole(b"N" + b"r" + struct.pack("<I", 2**28)))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec from the forking process (pytest's own)
    code = ("import sys\nfrom gelanc import safeload\n"
            "try:\n    safeload.read(sys.argv[1])\nexcept safeload.CheckpointError:\n    pass\n"
            "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert int(out.stdout) < 1_500_000  # KB: torch's import, not 2 GB of memo


def test_a_tensor_expanded_from_one_value_is_refused(tmp_path):
    for obj in ({"w": torch.ones(1).expand(10**6)}, {"w": torch.ones(4, 1).expand(4, 10**5)}):
        path = tmp_path / "zs.pt"
        torch.save(obj, path)
        with pytest.raises(CheckpointError, match="more values than its storage holds"):
            safeload.read(path)
    torch.save({"w": torch.ones(6).view(2, 3).t()}, path)  # a transpose holds its values once: fine
    assert safeload.read(path)["w"].shape == (3, 2)


def test_views_of_one_storage_are_counted_once(tmp_path, gelanc_ckpt, monkeypatch):
    """A file can repeat views of one storage: the values it holds are what is stored."""
    from gelanc.backend import fx as torch_fx

    def spec(c):
        big = torch.zeros(100_000)
        c["state_dict"] = {f"v{i}": big[:] for i in range(200)}  # 20 M "values", 100,000 stored
        c["meta"].update(model="huge", root="huge.gel", sources={"huge.gel": HUGE_SPEC.replace("50000", "600")},
                         links={}, params={})

    path = _rewrite(gelanc_ckpt, tmp_path, spec)
    monkeypatch.setattr(torch_fx._Builder, "build", lambda *a: pytest.fail("the network was allocated"))
    with pytest.raises(CheckpointError, match="more parameters than the 100,000 values it holds"):
        gelanc.load(path)


def test_class_names_may_be_any_script_but_not_control_characters(tmp_path, gelanc_ckpt):
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c.update(names=["café", "猫"]))
    assert read(path)["names"] == ["café", "猫"]
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c.update(names=["a\u202eb", "c"]))
    with pytest.raises(CheckpointError, match="printable"):
        read(path)


def test_a_run_without_settings_or_with_a_data_path_that_is_not_text(tmp_path, capsys, gelanc_ckpt):
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c.update(train=None))
    assert main(["val", path, "--data", str(tmp_path / "none.yaml")]) == 2
    assert "no such data file" in capsys.readouterr().err
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c["train"]["args"].update(data=123))
    assert main(["val", path]) == 2
    assert "the run's data path must be text" in capsys.readouterr().err


def test_escape_sequences_from_a_file_never_reach_the_terminal(tmp_path, capsys, gelanc_ckpt):
    evil = "\x1b]0;OWNED\x07\x1b[2Jdata.yaml"
    path = _rewrite(gelanc_ckpt, tmp_path, lambda c: c["train"]["args"].update(data=evil))
    assert main(["val", path]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "?]0;OWNED??[2Jdata.yaml" in err


def test_a_fifo_named_like_a_checkpoint_does_not_hang(tmp_path, capsys):
    import os

    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        safeload.read(fifo)  # a blocking open() would wait here forever for a writer
    assert main(["val", str(fifo)]) == 2
