"""Perceptual error: LPIPS golden values, the raw PE's 2018 definition, n/a without weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
import torch
import torchvision

from pipeline.evaluation import perceptual
from pipeline.nets import weights

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "lpips"
ORDER = ["cache", "registry"]
TAPS = {"alex": (torchvision.models.alexnet, (1, 4, 7, 9, 11)),           # ReLU outputs LPIPS compares
        "vgg": (torchvision.models.vgg16, (3, 8, 15, 22, 29))}


@pytest.fixture(scope="module")
def nets(weights_root):
    torch.set_num_threads(1)
    loaded, status = perceptual.load_networks(["alex", "vgg"], ORDER, weights_root)
    assert status["alex"]["available"] and status["vgg"]["available"], status
    return loaded


def _load(name: str) -> torch.Tensor:
    """As lpips.load_image + im2tensor: RGB, [-1,1], (1,3,H,W)."""
    image = cv2.imread(str(FIXTURES / name), cv2.IMREAD_COLOR)[:, :, ::-1].copy()
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1


def _pe_2018(net: str, state: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The 2018 'net' distance from scratch: sum over layers of the spatial mean of 1 - cos."""
    builder, taps = TAPS[net]
    trunk = builder(weights=None).features
    trunk.load_state_dict({k[len("features."):]: v for k, v in state.items()})
    trunk.eval()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps_of(x):
        x, out = (x - shift) / scale, []
        for i, layer in enumerate(trunk[: max(taps) + 1]):
            x = layer(x)
            if i in taps:
                out.append(x.clone())        # in-place ReLUs: keep this layer's output
        return out

    total = 0
    with torch.no_grad():
        for fa, fb in zip(taps_of(a), taps_of(b)):
            na = fa / (fa.norm(dim=1, keepdim=True) + 1e-10)
            nb = fb / (fb.norm(dim=1, keepdim=True) + 1e-10)
            total = total + (1 - (na * nb).sum(dim=1)).mean(dim=(1, 2))
    return total


def test_golden_calibrated_alexnet_on_lpips_reference_images(nets):
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/lpips is not beside this clone")
    ref, p0, p1 = _load("ex_ref.png"), _load("ex_p0.png"), _load("ex_p1.png")
    _, calibrated = nets["alex"](torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert calibrated[0].item() == pytest.approx(0.722, abs=0.002)
    assert calibrated[1].item() == pytest.approx(0.138, abs=0.002)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_both_columns_equal_the_lpips_package_and_raw_equals_2018(nets, net, weights_root):
    torch.manual_seed(1)
    a = torch.rand(3, 3, 64, 64) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    raw, calibrated = nets[net](a, b)

    state, _ = weights.resolve(perceptual.BACKBONES[net], ["cache"], weights_root)
    with torch.no_grad():
        package_lin = nets[net].model(a, b).flatten()
        uncalibrated = perceptual.build_lpips(net, state, calibrated=False)
        package_raw = uncalibrated(a, b).flatten() / 2
    torch.testing.assert_close(calibrated, package_lin, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(raw, package_raw, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(raw, _pe_2018(net, state, a, b), rtol=1e-4, atol=1e-5)
    assert (raw > 0).all() and (calibrated > 0).all()
    same_raw, same_lin = nets[net](a, a)
    assert same_raw.abs().max() < 1e-5 and same_lin.abs().max() < 1e-5


def test_trunk_is_never_left_random(weights_root):
    state, _ = weights.resolve("alexnet", ["cache", "registry"], weights_root)
    partial = {k: v for k, v in state.items() if not k.startswith("features.10.")}
    with pytest.raises(KeyError, match="features.10"):
        perceptual.build_lpips("alex", partial)
    model = perceptual.build_lpips("alex", state)
    torch.testing.assert_close(getattr(model.net.slice5, "10").weight, state["features.10.weight"])


def test_missing_backbone_gives_na_with_reason(weights_root):
    loaded, status = perceptual.load_networks(["squeeze", "alex"], ORDER, weights_root)
    assert "squeeze" not in loaded and "alex" in loaded
    assert status["squeeze"]["available"] is False and status["squeeze"]["sha256"] is None
    assert "squeezenet1_1" in status["squeeze"]["reason"]
    assert status["alex"]["sha256"] == weights.resolve("alexnet", ["cache"], weights_root)[1]["sha256"]
