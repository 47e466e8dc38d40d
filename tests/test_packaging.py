"""What a wheel holds: every package of the source tree (an editable install would hide a missing one)."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_is_listed_for_the_wheel():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gelanc").rglob("__init__.py")}
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"
    mapped = {name for name in listed if name not in found}
    assert mapped == set(cfg["package-dir"]), "listed packages that are neither in gelanc/ nor mapped"


# What `pip install gelanc` (no extras) leaves out: the torch extra, and numpy, which comes with it
NOT_INSTALLED = ["torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "pycocotools", "tqdm", "matplotlib",
                 "PIL", "numpy", "scipy", "thop"]
WITHOUT_TORCH = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_INSTALLED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
from gelanc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _without_torch(*argv, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *argv], capture_output=True, text=True, cwd=cwd)


def test_the_compiler_commands_run_without_the_torch_extra(tmp_path):
    """check, stats, viz (to DOT) and import-yaml need none of torch, numpy & co."""
    spec = ROOT / "specs" / "yolov9-c.gel"
    for argv in (["check", str(spec)], ["stats", "--json", str(spec)], ["viz", str(spec), "-o", "m.dot"]):
        r = _without_torch(*argv, cwd=tmp_path)
        assert r.returncode == 0, (argv, r.stderr)
    assert (tmp_path / "m.dot").read_text().startswith("digraph")
    (tmp_path / "m.yaml").write_text("nc: 3\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\n  - [-1, 1, Conv, [32, 3, 2]]\n"
                                     "head:\n  - [[-1], 1, DDetect, [nc]]\n")
    r = _without_torch("import-yaml", "m.yaml", "-o", "m.gel", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "model m" in (tmp_path / "m.gel").read_text()


def test_a_torch_command_without_the_extra_says_what_to_install(tmp_path):
    r = _without_torch("build", str(ROOT / "specs" / "gelan-t.gel"), "-o", "out", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr == ("gelanc: error: 'build' needs torch, which the torch extra installs: "
                        "pip install 'gelanc[torch]'\n")
    assert not (tmp_path / "out").exists()
