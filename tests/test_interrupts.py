"""Ctrl-C: one line and exit 1, never a traceback, never a library left half-imported."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gelanc.data.synth import write
from gelanc.dsl.loader import library_root
from gelanc.interrupts import held_during_imports


def test_an_interrupt_during_an_import_waits_for_its_end(tmp_path, monkeypatch):
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of this import\n"
        "for _ in range(20):\n"
        "    time.sleep(0.01)\n"
        "COMPLETE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        with held_during_imports():
            import slow_module  # noqa: F401
            time.sleep(5)  # the held interrupt arrives here, once the import is over
    assert sys.modules["slow_module"].COMPLETE
    del sys.modules["slow_module"]


def test_without_it_the_import_is_cut_short(tmp_path, monkeypatch):
    """The bug the handler exists for: the default handler interrupts the module's body."""
    (tmp_path / "cut_module.py").write_text(
        "import os, signal, time\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.5)\n"
        "COMPLETE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        import cut_module  # noqa: F401
    assert "cut_module" not in sys.modules


@pytest.mark.parametrize("delay", [0.4, 0.9, 1.4, 2.2])
def test_ctrl_c_in_the_first_seconds_of_a_run_is_one_line(tmp_path, delay):
    data = write(tmp_path / "d", images=8, val=4, size=64, seed=1)
    p = subprocess.Popen([sys.executable, "-m", "gelanc", "train", str(library_root() / "specs" / "gelan-t.gel"),
                          "--data", str(data), "--imgsz", "64", "--epochs", "50", "--batch", "4", "--workers", "0",
                          "--out", str(tmp_path / "run"), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={k: v for k, v in os.environ.items() if k != "GELANC_TRACEBACK"})
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(("gelanc: interrupted",
                                                                              "interrupted; continue with")), err
