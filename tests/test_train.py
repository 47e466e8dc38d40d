"""Training end to end on CPU: the run's files, resume, DDP, val, predict, bad input.

Runs are tiny (gelan-t and yolov9-t at 64 px on a dozen synthetic images) so the
whole file stays within a minute or two on the 2-core CI machine; what they check is
behaviour — files, exactness of resume, DDP agreement, exit codes — not accuracy,
which benchmarks/train_synth.py measures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gelanc.backend.checkpoint import read
from gelanc.cli import main
from gelanc.data.synth import write
from gelanc.dsl.loader import library_root
from gelanc.train import loop
from gelanc.train.args import TrainArgs
from gelanc.train.loop import train
from gelanc.train.resume import resume_args

SPECS = library_root() / "specs"
NOBN = Path(__file__).parent / "specs" / "nobn.gel"
FAST = {"warmup_epochs": 0.0, "mosaic": 0.5, "mixup": 0.0}  # a short run: no 100-iteration warmup


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("synth") / "d", images=12, val=4, size=64, seed=3)


def args(data: Path, out: Path, **kw) -> TrainArgs:
    base = dict(spec=str(SPECS / "gelan-t.gel"), data=str(data), epochs=2, imgsz=64, batch=4, workers=0,
                out=str(out), device="cpu", deterministic=True, progress=False, hyp=FAST, plots=False)
    return TrainArgs(**{**base, **kw})


def test_cli_run_writes_checkpoints_results_and_curves(data, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(SPECS / "gelan-t.gel"), "--data", str(data), "--epochs", "2", "--imgsz", "64",
                 "--batch", "4", "--workers", "1", "--out", str(out), "--device", "cpu", "-q", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["epochs"] == 2 and summary["model"] == "gelan_t"
    assert {"map50", "map", "best_epoch"} <= set(summary)
    assert "train: 12 images" in err and "val: 4 images" in err
    from gelanc.train.plots import PLOT_FILES

    for f in ("last.pt", "best.pt", "results.csv", *PLOT_FILES, "val_batch0_labels.png", "val_batch0_pred.png"):
        assert (out / f).is_file(), f  # the plots too, made at the end of the run
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,train/box_loss,train/cls_loss,train/dfl_loss,val/box_loss")
    assert "metrics/mAP50" in rows[0] and "metrics/mAP50-95" in rows[0]
    assert all(float(v) > 0 for v in rows[2].split(",")[4:7])  # the validation losses

    ckpt = torch.load(out / "last.pt", weights_only=True)  # no code runs when it loads
    t = ckpt["train"]
    assert t["epoch"] == 2 and t["args"]["imgsz"] == 64 and t["hyp"]["box"] == 7.5
    assert ckpt["names"] == ["circle", "square", "triangle", "diamond"]
    assert "model gelan_t" in "".join(ckpt["meta"]["sources"].values())
    assert t["optimizer"]["state"], "the optimizer's momentum is saved"
    # the state_dict is the EMA's, not the raw weights
    key = next(k for k in ckpt["state_dict"] if k.endswith("conv.weight"))
    assert not torch.equal(ckpt["state_dict"][key], t["model"][key])

    # the command line resumes a run with its own settings; a longer --epochs goes on
    code = main(["train", "--resume", str(out / "last.pt"), "--epochs", "3", "-q", "--json", "--no-plots"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "resuming" in err and json.loads(stdout)["epochs"] == 3
    assert len((out / "results.csv").read_text().splitlines()) == 4
    code = main(["train", "--resume", str(out / "last.pt")])
    assert code == 2 and "already finished its 3 epochs" in capsys.readouterr().err


def test_resume_after_an_interruption_reaches_the_same_weights(data, tmp_path, monkeypatch):
    whole = train(args(data, tmp_path / "whole", epochs=3))

    real = loop.train_epoch

    def interrupted(*a, **kw):  # dies at the end of the second epoch, before its checkpoint
        metrics = real(*a, **kw)
        if kw["state"].epoch == 1:  # epochs finished before this one
            raise KeyboardInterrupt
        return metrics

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(args(data, tmp_path / "cut", epochs=3))
    monkeypatch.setattr(loop, "train_epoch", real)
    last = tmp_path / "cut" / "last.pt"
    assert read(last)["train"]["epoch"] == 1
    resumed = train(resume_args(last), resume=last)

    for name, a in whole.model.state_dict().items():
        assert torch.equal(a, resumed.model.state_dict()[name]), name
    for name, a in whole.ema.state_dict().items():
        assert torch.equal(a, resumed.ema.state_dict()[name]), name
    assert resumed.summary["epochs"] == 3
    assert len((tmp_path / "cut" / "results.csv").read_text().splitlines()) == 4


def test_yolov9_trains_both_heads_and_its_deploy_graph_scores_as_the_main_head(data, tmp_path, capsys):
    out = tmp_path / "v9"
    run = train(args(data, out, spec=str(SPECS / "yolov9-t.gel"), epochs=2))
    import gelanc
    from gelanc.backend.fx import ir_of

    torch.manual_seed(0)  # the run's initial weights
    init = gelanc.compile(SPECS / "yolov9-t.gel", nc=4).state_dict()
    g = ir_of(run.model)
    aux = [k for k in init if g.nodes.get(k.rsplit(".", 1)[0], {}).get("branch") == "aux" and k.endswith("weight")]
    assert len(aux) > 20
    trained = run.model.state_dict()
    # the aux branch learns (a few BatchNorm scales of the coarse levels see positives whose
    # target scores are ~1e-8 at the start, and move less than float32 resolves)
    moved = [k for k in aux if not torch.equal(trained[k], init[k])]
    assert len(moved) >= 0.9 * len(aux)
    deploy_keys = set(gelanc.deploy(gelanc.load(out / "last.pt")).state_dict())
    assert not deploy_keys & set(aux), "and is gone from the deploy graph"
    scores = {}
    for graph in ("deploy", "train"):
        code = main(["val", str(out / "last.pt"), "--graph", graph, "--device", "cpu", "--workers", "0",
                     "--conf", "0.001", "--json"])
        stdout, err = capsys.readouterr()
        assert code == 0, err
        scores[graph] = json.loads(stdout)
    assert {"map50", "map"} <= set(scores["deploy"])
    assert scores["deploy"]["map50"] == pytest.approx(scores["train"]["map50"], abs=1e-3)
    assert scores["deploy"]["map"] == pytest.approx(scores["train"]["map"], abs=1e-3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """torchrun, gloo: the replicas agree, and the update matches one process that sees
    the same global batch. The model has no BatchNorm (tests/specs/nobn.gel): with it,
    each process's batch statistics differ from the whole batch's, and at random
    initialisation that alone makes the two gradients unrelated. What remains is the
    reference's per-process normalisation of the loss by its own target scores."""
    data = write(tmp_path / "d", images=16, val=4, size=128, seed=5)
    common = ["train", str(NOBN), "--data", str(data), "--epochs", "1", "--imgsz", "128", "--batch", "8",
              "--workers", "0", "--device", "cpu", "-q", "--json", "--hyp", str(_hyp(tmp_path))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "gelanc", *common, "--out", str(tmp_path / "ddp")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout[p.stdout.index("{"):])
    assert summary["processes"] == 2 and summary["replicas_agree"] is True

    single = subprocess.run([sys.executable, "-m", "gelanc", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    import gelanc

    torch.manual_seed(0)  # both runs began from these weights: seed 0
    init = gelanc.compile(NOBN, nc=4).state_dict()
    moved = [torch.cat([(read(tmp_path / run / "last.pt")["train"]["model"][k] - init[k]).flatten() for k in init])
             for run in ("ddp", "one")]
    assert moved[1].norm() > 0
    assert torch.nn.functional.cosine_similarity(moved[0], moved[1], 0) > 0.98
    assert (moved[0] - moved[1]).norm() / moved[1].norm() < 0.15


def _hyp(tmp_path: Path) -> Path:
    f = tmp_path / "hyp.yaml"
    f.write_text("warmup_epochs: 0\nmosaic: 0.0\nmixup: 0.0\nfliplr: 0.0\nhsv_h: 0\nhsv_s: 0\nhsv_v: 0\n"
                 "translate: 0\nscale: 0\n")
    return f


def test_predict_draws_boxes_and_writes_json_in_original_pixels(data, tmp_path, capsys):
    out = tmp_path / "run"
    train(args(data, out, epochs=1))
    from torchvision.io import write_png

    img = tmp_path / "wide.png"
    write_png(torch.randint(0, 255, (3, 40, 90), dtype=torch.uint8), str(img))
    code = main(["predict", str(out / "last.pt"), str(img), str(data.parent / "images" / "val"),
                 "-o", str(tmp_path / "pred"), "--conf", "0.0001", "--device", "cpu", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads(stdout)
    assert len(results) == 5
    first = results[0]
    assert (first["width"], first["height"]) == (90, 40)
    for d in first["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 90 and 0 <= y1 <= y2 <= 40
        assert d["name"] in ("circle", "square", "triangle", "diamond")
    assert json.loads((tmp_path / "pred" / "predictions.json").read_text()) == results
    assert (tmp_path / "pred" / "wide.png").is_file()
    for cmd in (["predict", str(out / "last.pt"), str(img)], ["val", str(out / "last.pt")]):
        code = main([*cmd, "--imgsz", "100", "--device", "cpu"])
        assert code == 2 and "not a multiple of the model's largest stride, 32" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--device", "0,1"], "torch sees 0"),
    (["--device", "x,y"], "--device takes cpu, cuda"),
    (["--hyp", "nope.yaml"], "no such hyper-parameter file"),
    (["--data", "nope.yaml"], "no such data file"),
    (["--imgsz", "100"], "not a multiple of the network's largest stride, 32"),
    (["--batch", "0"], "batch"),
])
def test_bad_arguments_are_user_errors(data, tmp_path, capsys, extra, message):
    code = main(["train", str(SPECS / "gelan-t.gel"), "--out", str(tmp_path / "r"), "--imgsz", "64",
                 "--data", str(data), *extra])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r" / "last.pt").exists()


def test_invalid_data_yaml_stops_before_training(tmp_path, capsys):
    bad = tmp_path / "data.yaml"
    bad.write_text("train: images/train\nval: images/val\nnames: [a]\nnc: 3\n")
    code = main(["train", str(SPECS / "gelan-t.gel"), "--data", str(bad), "--out", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert code == 2 and "nc is 3 but names lists 1" in err
    assert not (tmp_path / "r").exists()


def test_bad_files_are_reported_and_skipped_not_fatal(tmp_path, capsys):
    d = write(tmp_path / "d", images=8, val=2, size=64, seed=1)
    root = d.parent
    (root / "images" / "train" / "000001.png").write_bytes(b"not a png")
    (root / "labels" / "train" / "000002.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "000003.txt").write_text("0 1.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "000004.txt").unlink()
    code = main(["train", str(SPECS / "gelan-t.gel"), "--data", str(d), "--epochs", "1", "--imgsz", "64",
                 "--batch", "4", "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "r"), "-q"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "000001.png" in err and "000002.txt" in err and "000003.txt" in err and "000004.png" in err
    assert "train: 5 images" in err  # 8, less a corrupt image and two bad label files
    assert (tmp_path / "r" / "last.pt").is_file()


def test_a_model_whose_classes_differ_from_the_data_is_refused(data, tmp_path, capsys):
    code = main(["train", str(SPECS / "gelan-t.gel"), "--data", str(data), "--set", "nc=7", "--imgsz", "64",
                 "--device", "cpu", "--out", str(tmp_path / "r")])
    _, err = capsys.readouterr()
    assert code == 2 and "7 classes but the data has 4" in err
