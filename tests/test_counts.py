"""Exact counts against the reference implementation.

The figures below were measured on WongKinYiu/yolov9 itself with thop 0.1.1 at
640×640, nc = 80 (train = the model as built for training; deploy = aux branch
removed, Conv+BN and RepConvN fused) — they come from the issue that specified
this pass, not from gelanc.
"""

import pytest

from gelanc.dsl.loader import library_root
from gelanc.pipeline import compile_file
from gelanc.stats import model_stats

REFERENCE = {
    #  model      train params  train GFLOPs  deploy params  deploy GFLOPs
    "gelan-t": (2_442_640, 10.078, 2_407_632, 9.819),
    "gelan-s": (7_226_208, 27.039, 7_105_888, 26.383),
    "gelan-m": (20_124_000, 77.350, 19_978_672, 76.316),
    "gelan-c": (25_498_752, 103.507, 25_288_768, 102.145),
    "gelan-e": (58_114_432, 192.500, 57_345_920, 188.954),
    "yolov9-t": (3_717_680, 16.525, 2_407_632, 9.819),
    "yolov9-s": (9_804_512, 39.947, 7_105_888, 26.383),
    "yolov9-m": (32_878_432, 133.022, 19_978_672, 76.316),
    "yolov9-c": (51_182_080, 239.877, 25_288_768, 102.145),
    "yolov9-e": (69_529_664, 245.525, 57_345_920, 188.954),
}


@pytest.fixture(scope="module")
def stats():
    return {name: model_stats(compile_file(library_root() / "specs" / f"{name}.gel")[0])
            for name in REFERENCE}


@pytest.mark.parametrize("name", list(REFERENCE))
def test_counts_match_reference(stats, name):
    tp, tg, dp, dg = REFERENCE[name]
    s = stats[name]
    assert s["train"]["params"] == tp
    assert s["deploy"]["params"] == dp
    assert s["train"]["gflops"] == pytest.approx(tg, rel=1e-3)
    assert s["deploy"]["gflops"] == pytest.approx(dg, rel=1e-3)


def test_paper_figures_kept_beside_models(stats):
    for name, s in stats.items():
        assert s["paper"]["params"] > 1e6 and s["paper"]["gflops"] > 1, name
    assert stats["yolov9-c"]["paper"] == {"params": 25_300_000, "gflops": 102.1, "ap": 53.0}


def test_only_yolov9_has_an_aux_branch(stats):
    for name, s in stats.items():
        assert (s["aux_nodes"] > 0) == name.startswith("yolov9"), name
