"""`gelanc features`: the feature-map grid of random deep stacks."""

import torch
from PIL import Image

from gelanc.cli import main
from gelanc.tools.features import BUILTIN, DEFAULT_IMAGE, colourise, feature_maps, load_image, spec_path


def test_stacks_return_their_taps():
    image = load_image(DEFAULT_IMAGE, 32)
    for name in BUILTIN:
        maps = feature_maps(spec_path(name), image, [1, 3], width=8, seed=0)
        assert [tuple(m.shape) for m in maps] == [(1, 8, 32, 32)] * 2, name


def test_same_seed_same_maps_and_colours_in_range():
    image = load_image(DEFAULT_IMAGE, 32)
    a = feature_maps(spec_path("gelan"), image, [2], 8, seed=1)[0]
    b = feature_maps(spec_path("gelan"), image, [2], 8, seed=1)[0]
    assert torch.equal(a, b)
    rgb = colourise(a)
    assert rgb.shape == (3, 32, 32) and rgb.min() >= 0 and rgb.max() <= 1


def test_cli_writes_the_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["features", "plainnet", "resnet", "--depths", "1", "2", "--width", "8", "--imgsz", "32",
                 "-o", str(out)]) == 0
    w, h = Image.open(out).size
    assert w > 3 * 128 and h > 2 * 128  # three columns (input, two depths), two rows
    assert main(["features", "nosuchnet", "-o", str(out)]) == 2
    assert main(["features", "--image", str(tmp_path / "missing.png"), "-o", str(out)]) == 2
    assert "no such image" in capsys.readouterr().err
    (tmp_path / "junk.png").write_bytes(b"junk")
    assert main(["features", "--image", str(tmp_path / "junk.png"), "-o", str(out)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["features", "--imgsz", "0", "-o", str(out)]) == 2


def test_the_two_initialisations_have_their_papers_spreads():
    """He et al.'s fan-out initialisation (the ResNet paper's, for PlainNet and ResNet)
    and PyTorch's default (YOLOv9's code, for CSPNet and GELAN), told apart by the spread
    of a 3×3 conv's weights: He std √(2 / (9·C_out)), default √(1 / (3·9·C_in))."""
    import gelanc
    from gelanc.tools.features import INITS

    torch.manual_seed(0)
    m = gelanc.compile(spec_path("plainnet"), depth=2, taps=[2], width=64)
    w = m.get_submodule("layer.0.conv").weight
    default_std = w.std().item()
    INITS["he"](m)
    he_std = m.get_submodule("layer.0.conv").weight.std().item()
    assert abs(default_std - (1 / (3 * 9 * 64)) ** 0.5) < 0.1 * default_std
    assert abs(he_std - (2 / (9 * 64)) ** 0.5) < 0.05 * he_std


def test_the_figure_initialises_resnet_by_he_and_gelan_by_default():
    """--init auto: the ResNet row is He-initialised, the GELAN row PyTorch's default;
    --init default gives both the default."""
    from gelanc.tools.features import figure

    image = load_image(DEFAULT_IMAGE, 32)
    maps = {init: {name: feature_maps(spec_path(name), image, [3], 8, seed=0, init=init)[0]
                   for name in ("resnet", "gelan")} for init in ("default", "he")}
    assert not torch.allclose(maps["default"]["resnet"], maps["he"]["resnet"])
    _, auto = figure(["resnet", "gelan"], DEFAULT_IMAGE, [3], width=8, size=32)
    assert torch.equal(auto["ResNet"][0], maps["he"]["resnet"])
    assert torch.equal(auto["GELAN"][0], maps["default"]["gelan"])
    _, same = figure(["resnet"], DEFAULT_IMAGE, [3], width=8, size=32, init="default")
    assert torch.equal(same["ResNet"][0], maps["default"]["resnet"])
