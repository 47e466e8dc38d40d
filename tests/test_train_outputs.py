"""What a run reports: results.csv's columns, early stopping, the data workers, the
time of a run across resumes.

Validation is scripted where the test needs a known sequence of scores (early
stopping): the epochs themselves train for real, on four 64-px images."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from gelanc.backend.checkpoint import read
from gelanc.data.synth import write
from gelanc.dsl.loader import library_root
from gelanc.train import loop
from gelanc.train.args import TrainArgs
from gelanc.train.loop import train
from gelanc.train.results import RESULT_COLUMNS
from gelanc.train.resume import CKPT_KEY, resume_args
from gelanc.train.setup import default_workers

SPEC = library_root() / "specs" / "gelan-t.gel"
FAST = {"warmup_epochs": 0.0, "mosaic": 0.0, "mixup": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("synth") / "d", images=4, val=2, size=64, seed=5)


def args(data: Path, out: Path, **kw) -> TrainArgs:
    base = dict(spec=str(SPEC), data=str(data), epochs=2, imgsz=64, batch=4, workers=0, out=str(out),
                device="cpu", progress=False, hyp=FAST, plots=False)
    return TrainArgs(**{**base, **kw})


def scripted(map50s: list[float]):
    """A stand-in for loop.validate whose epoch k scores map50s[k - 1] (mAP50-95 a half of it)."""
    calls = []

    def validate(*a, **k):
        score = map50s[len(calls)]
        calls.append(score)
        return {"map50": score, "map": score / 2, "precision": 0.5, "recall": 0.25, "val/box_loss": 1.0,
                "val/cls_loss": 2.0, "val/dfl_loss": 3.0, "skipped": []}

    return validate, calls


def test_early_stopping_stops_patience_epochs_after_the_best(data, tmp_path, monkeypatch):
    # best at epoch 2; epochs 3, 4, 5 are no better: with patience 3 the run ends after epoch 5
    validate, calls = scripted([0.1, 0.4, 0.2, 0.4, 0.3, 0.9, 0.9, 0.9])
    monkeypatch.setattr(loop, "validate", validate)
    summary = train(args(data, tmp_path / "run", epochs=8, patience=3)).summary
    assert len(calls) == 5 and summary["epochs"] == 5 and summary["stopped_early"]
    assert summary["best_epoch"] == 2  # a tie later (epoch 4) does not replace the first best


def test_without_patience_running_out_the_run_is_not_early(data, tmp_path, monkeypatch):
    validate, calls = scripted([0.1, 0.4, 0.2])
    monkeypatch.setattr(loop, "validate", validate)
    summary = train(args(data, tmp_path / "run", epochs=3, patience=1)).summary
    assert summary["epochs"] == 3 and not summary["stopped_early"]  # stale after epoch 3, but it was the last


def test_results_csv_has_every_column_in_order(data, tmp_path, monkeypatch):
    validate, _ = scripted([0.1, 0.2])
    monkeypatch.setattr(loop, "validate", validate)
    train(args(data, tmp_path / "run"))
    with (tmp_path / "run" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[1]["val/dfl_loss"] == "3" and rows[1]["metrics/recall"] == "0.25"
    assert rows[1]["metrics/mAP50"] == "0.2" and rows[1]["metrics/mAP50-95"] == "0.1"
    assert float(rows[0]["train/box_loss"]) > 0 and float(rows[0]["lr/weights"]) > 0


def test_the_time_of_a_resumed_run_covers_every_session(data, tmp_path, monkeypatch):
    validate, _ = scripted([0.1, 0.2, 0.3])
    monkeypatch.setattr(loop, "validate", validate)
    train(args(data, tmp_path / "run", epochs=2))
    last = tmp_path / "run" / "last.pt"
    before = read(last)[CKPT_KEY]["seconds"]  # the first session's time, as its last save kept it
    second = train(resume_args(last, epochs=3), resume=last).summary
    assert second["epochs"] == 3 and before > 0
    # the run's time is the first session's and the second's, which holds epoch 3 (a wall-clock
    # comparison of the two sessions' totals would depend on the machine's load)
    with (tmp_path / "run" / "results.csv").open() as f:
        epoch3 = float(list(csv.DictReader(f))[2]["time_s"])
    assert second["seconds"] >= before + epoch3


@pytest.mark.parametrize("batch, ranks, cpus, expected", [(16, 1, 2, 2), (16, 1, 64, 8), (4, 1, 64, 4),
                                                           (16, 2, 2, 1), (16, 4, 2, 0)])
def test_default_workers_fit_the_machine_and_the_batch(monkeypatch, batch, ranks, cpus, expected):
    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_workers(batch, ranks) == expected


@pytest.mark.parametrize("mode, logged", [("auto", "image cache: 4 images, 0 MB in memory"),
                                          ("off", "image cache: off")])
def test_a_run_says_whether_it_caches_its_images(data, tmp_path, monkeypatch, capsys, mode, logged):
    validate, _ = scripted([0.1])
    monkeypatch.setattr(loop, "validate", validate)
    made = []
    real = loop.image_cache
    monkeypatch.setattr(loop, "image_cache", lambda *a: made.append(real(*a)) or made[-1])
    train(args(data, tmp_path / "run", epochs=1, cache=mode))
    assert logged in capsys.readouterr().err
    assert (made[0] is not None) == (mode == "auto")
