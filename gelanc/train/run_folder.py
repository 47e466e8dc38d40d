"""The run folder: what each epoch writes there (last.pt, best.pt, results.csv and
results.png, each whole or not at all), what a killed run left there repaired, and
gelanc's temporary files of an earlier kill removed."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gelanc.train import ddp
from gelanc.train.args import TrainError
from gelanc.train.ddp import log
from gelanc.train.epoch import State
from gelanc.train.results import best_epoch

RUN_FILES = ("last.pt", "best.pt", "results.csv", "results.png")  # what every epoch writes in the run folder


def open_run_dir(out: Path, w: ddp.World) -> None:
    """Create the run folder and remove what killed writes of an earlier run left in it:
    gelanc's own temporary files of the run's files (:func:`gelanc.atomic.stale_temps`)."""
    from gelanc.atomic import remove_stale_temps

    try:
        out.mkdir(parents=True, exist_ok=True)
        from gelanc.train.plots import PLOT_FILES

        removed = remove_stale_temps(out, dict.fromkeys((*RUN_FILES, *PLOT_FILES)))
    except OSError as e:
        raise TrainError(f"cannot use the run folder {out}: {e.strerror or e}") from None
    if removed:
        log(w, f"removed {len(removed)} temporary file{'s' * (len(removed) != 1)} a killed run left in {out}")


def same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return a.is_file() and (os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False))


def repair_run(out: Path, last: Path, state: State, title: str) -> None:
    """Put the run folder in agreement with ``last``, its last.pt, after a kill between an
    epoch's writes: best.pt re-created when its epoch is last.pt's own and it is missing or
    holds another; results.csv and results.png rewritten from last.pt's rows."""
    from gelanc.atomic import atomic_copy
    from gelanc.train import results

    if not state.rows:
        return
    try:
        epoch = best_epoch(state.rows)
    except (KeyError, TypeError, ValueError):  # rows that are not what gelanc writes: nothing to go by
        epoch = None
    best = out / "best.pt"
    if epoch == state.epoch and not same_bytes(best, last):
        atomic_copy(last, best)
    results.write_csv(out / "results.csv", state.rows)
    results.plot(out / "results.png", state.rows, title=title)


def write_epoch(out: Path, state: State, best: bool, title: str, save_last: Callable[[Path], Any]) -> None:
    """An epoch's files: last.pt, then best.pt (a copy, when the epoch is the best so far),
    results.csv and results.png; ``state.saved`` follows what last.pt holds (a Ctrl-C
    during the later files then still names the epoch saved). A write that fails (a full
    disk, a refused target) stops the run with a :class:`TrainError` saying what is on
    disk and how to go on; nothing is half-written."""
    saved = state.saved
    from gelanc.atomic import atomic_copy
    from gelanc.train import results

    last = out / "last.pt"
    try:
        save_last(last)
    except OSError as e:
        if saved:
            raise TrainError(f"{e}; the run stopped after training epoch {state.epoch} without saving it: {last} "
                             f"still holds epoch {saved}, intact; make room, then continue with: "
                             f"gelanc train --resume {last}") from None
        held = f"{last} is as it was" if last.exists() else "nothing was saved"
        raise TrainError(f"{e}; the run stopped after training epoch {state.epoch} without saving it ({held}); "
                         f"make room, then run it again") from None
    state.saved = state.epoch
    try:
        if best:
            atomic_copy(last, out / "best.pt")
        results.write_csv(out / "results.csv", state.rows)
        results.plot(out / "results.png", state.rows, title=title)
    except OSError as e:
        raise TrainError(f"{e}; {last} holds epoch {state.epoch}, saved; make room, then continue with: "
                         f"gelanc train --resume {last} (which also writes best.pt and the results it "
                         f"could not)") from None
