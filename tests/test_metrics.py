"""Low-level metrics against independent computations on synthetic pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from pipeline import metrics


def _pair(seed: int = 0, size: int = 32):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=hr.shape)
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    return sr, hr


def _ssim_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 with a Gaussian window (sigma 1.5, 11x11) and population statistics."""
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    blur = lambda x: gaussian_filter(x, sigma=1.5, truncate=3.5, mode="reflect")
    scores = []
    for ch in range(3):
        x, y = a[..., ch], b[..., ch]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        scores.append(s[5:-5, 5:-5].mean())              # skimage ignores the half-window border
    return float(np.mean(scores))


def test_l2_and_psnr_match_numpy():
    sr, hr = _pair()
    a, b = sr / 255.0, hr / 255.0
    assert metrics.l2(sr, hr) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)
    assert metrics.psnr(sr, hr, 0) == pytest.approx(-10 * np.log10(np.mean((a - b) ** 2)), rel=1e-12)
    shaved = np.mean((a[4:-4, 4:-4] - b[4:-4, 4:-4]) ** 2)
    assert metrics.psnr(sr, hr, 4) == pytest.approx(10 * np.log10(1 / shaved), rel=1e-12)
    assert metrics.psnr(sr, hr, 4) != pytest.approx(metrics.psnr(sr, hr, 0), rel=1e-6)


def test_psnr_y_uses_bt601_luma_and_shaves():
    sr, hr = _pair(1)
    y = lambda im: 16 + (65.481 * im[..., 0] + 128.553 * im[..., 1] + 24.966 * im[..., 2]) / 255.0
    ys, yh = y(sr.astype(float))[3:-3, 3:-3], y(hr.astype(float))[3:-3, 3:-3]
    expected = 10 * math.log10(255 ** 2 / np.mean((ys - yh) ** 2))
    assert metrics.psnr_y(sr, hr, 3) == pytest.approx(expected, rel=1e-12)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert metrics.luma(white).max() == pytest.approx(235.0)


def test_ssim_matches_wang_et_al_by_hand():
    for seed in range(3):
        sr, hr = _pair(seed)
        assert metrics.ssim(sr, hr) == pytest.approx(_ssim_by_hand(sr / 255.0, hr / 255.0), abs=1e-9)
    sr, hr = _pair(5)
    value = metrics.ssim(sr, hr)
    assert 0 < value < 1
    assert metrics.ssim_error(value) == pytest.approx((1 - value) / 2)


def test_identical_images_give_ssim_one_and_infinite_psnr():
    _, hr = _pair(2)
    row = metrics.image_metrics(hr, hr, scale=4)
    assert row["l2"] == 0 and row["ssim"] == pytest.approx(1.0) and row["ssim_error"] == pytest.approx(0.0)
    assert math.isinf(row["psnr"]) and math.isinf(row["psnr_y"])


def test_aggregate_caps_psnr_and_propagates_na():
    mean, std = metrics.aggregate([math.inf, 30.0], "psnr")
    assert mean == pytest.approx((metrics.PSNR_CAP + 30) / 2) and math.isfinite(std)
    assert metrics.aggregate([1.0, 3.0], "l2") == (2.0, 1.0)
    assert metrics.aggregate([0.1, None], "pe_squeeze") == (None, None)
    assert metrics.aggregate([0.1, float("nan")], "pe_squeeze") == (None, None)


def test_shave_refuses_images_smaller_than_the_border():
    with pytest.raises(ValueError):
        metrics.psnr(np.zeros((6, 6, 3), np.uint8), np.zeros((6, 6, 3), np.uint8), 3)
