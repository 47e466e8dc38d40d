"""The command line: output shapes, exit codes, and staying torch-free."""

import json
import subprocess
import sys

from gelanc.cli import main
from gelanc.dsl.loader import library_root

SPECS = library_root() / "specs"


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_stats_json_one_file_is_an_object(capsys):
    code, out, _ = run(capsys, "stats", str(SPECS / "yolov9-c.gel"), "--json")
    assert code == 0
    r = json.loads(out)
    assert r["model"] == "yolov9_c" and r["imgsz"] == 640
    assert set(r["train"]) >= {"params", "gflops"} and set(r["deploy"]) >= {"params", "gflops"}
    assert r["paper"]["params"] == 25_300_000
    assert r["train"]["params"] > r["deploy"]["params"]


def test_stats_json_several_files_is_a_list(capsys):
    code, out, _ = run(capsys, "stats", str(SPECS / "gelan-t.gel"), str(SPECS / "gelan-s.gel"), "--json",
                       "--imgsz", "320")
    rows = json.loads(out)
    assert code == 0 and [r["model"] for r in rows] == ["gelan_t", "gelan_s"]
    assert all(r["imgsz"] == 320 for r in rows)


def test_stats_without_files_covers_the_zoo(capsys):
    code, out, _ = run(capsys, "stats")
    assert code == 0
    for name in ["gelan_t", "gelan_e", "yolov9_t", "yolov9_e", "gelan_s_res"]:
        assert name in out
    assert "25,288,768" in out  # gelan-c / yolov9-c deploy


def test_stats_per_block_rows_add_up(capsys):
    code, out, _ = run(capsys, "stats", str(SPECS / "yolov9-t.gel"), "--json", "--per-block")
    r = json.loads(out)
    assert sum(b["train"]["params"] for b in r["blocks"]) == r["train"]["params"]
    assert sum(b["deploy"]["params"] for b in r["blocks"] if b["deploy"]) == r["deploy"]["params"]
    assert {b["branch"] for b in r["blocks"]} == {"main", "aux", "both"}  # the dual head is both
    assert all(b["deploy"] is None for b in r["blocks"] if b["branch"] == "aux")


def test_non_square_imgsz(capsys):
    code, out, _ = run(capsys, "stats", str(SPECS / "gelan-c.gel"), "--json", "--imgsz", "384x640")
    assert code == 0 and json.loads(out)["imgsz"] == [384, 640]


def test_bad_imgsz_is_a_user_error(capsys):
    code, _, err = run(capsys, "stats", str(SPECS / "gelan-c.gel"), "--imgsz", "100")
    assert code == 2 and "error: input size 100×100 is not a multiple" in err and "Traceback" not in err


def test_set_overrides_model_parameters(capsys):
    _, out, _ = run(capsys, "stats", str(SPECS / "gelan-c.gel"), "--json", "--set", "nc=20")
    _, out80, _ = run(capsys, "stats", str(SPECS / "gelan-c.gel"), "--json")
    assert json.loads(out)["deploy"]["params"] < json.loads(out80)["deploy"]["params"]
    code, _, err = run(capsys, "stats", str(SPECS / "gelan-c.gel"), "--set", "classes=20")
    assert code == 2 and "has no parameter 'classes'" in err
    code, _, err = run(capsys, "check", str(SPECS / "gelan-c.gel"), "--set", "nc")
    assert code == 2 and "NAME=VALUE" in err


def test_unknown_command_exits_2():
    r = subprocess.run([sys.executable, "-m", "gelanc", "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2


def test_check_and_stats_never_import_torch():
    code = (
        "import sys; from gelanc.cli import main\n"
        f"assert main(['check', r'{SPECS / 'yolov9-e.gel'}']) == 0\n"
        f"assert main(['stats', r'{SPECS / 'yolov9-e.gel'}', '--json', '--per-block']) == 0\n"
        "bad = [m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
