"""Low-level metrics against independent computations on synthetic pairs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, uniform_filter

from pipeline import metrics


def _pair(seed: int = 0, size: int = 32):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=hr.shape)
    sr = np.clip(hr.astype(int) + noise, 0, 255).astype(np.uint8)
    return sr, hr


def _smooth_pair(seed: int = 0, size: int = 48):
    """A photo-like pair: a smooth HR (structure at several scales) and a blurred, shifted-colour SR."""
    rng = np.random.default_rng(seed)
    hr = gaussian_filter(rng.random((size, size, 3)) * 255, sigma=(2, 2, 0))
    hr = np.clip((hr - hr.min()) / (hr.max() - hr.min()) * 255, 0, 255).astype(np.uint8)
    sr = cv2.GaussianBlur(hr.astype(np.float32), (0, 0), 1.2) * np.array([1.0, 0.9, 1.05]) + 4
    return np.clip(np.round(sr), 0, 255).astype(np.uint8), hr


def _ssim_gaussian_by_hand(a: np.ndarray, b: np.ndarray) -> float:
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


def _dssim_zhang_by_hand(sr: np.ndarray, hr: np.ndarray) -> float:
    """[44]'s dssim on uint8 RGB: (1 - SSIM)/2, 7x7 uniform window, sample covariance, range 255."""
    c1, c2, n = (0.01 * 255) ** 2, (0.03 * 255) ** 2, 49
    box = lambda x: uniform_filter(x, size=7, mode="reflect")
    scores = []
    for ch in range(3):
        x, y = sr[..., ch].astype(np.float64), hr[..., ch].astype(np.float64)
        mx, my = box(x), box(y)
        vx = (box(x * x) - mx * mx) * n / (n - 1)
        vy = (box(y * y) - my * my) * n / (n - 1)
        cxy = (box(x * y) - mx * my) * n / (n - 1)
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        scores.append(s[3:-3, 3:-3].mean())
    return (1.0 - float(np.mean(scores))) / 2.0


# ---- BasicSR (basicsr/metrics/psnr_ssim.py, metric_util.to_y_channel), written out independently
def _basicsr_y(rgb_u8: np.ndarray) -> np.ndarray:
    img = rgb_u8[..., ::-1].astype(np.float32) / 255.0                # BasicSR reads BGR with cv2
    y = (np.dot(img, [24.966, 128.553, 65.481]) + 16.0) / 255.0      # bgr2ycbcr(y_only=True), float32 out
    return y.astype(np.float32) * 255.0


def _basicsr_psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    a = _basicsr_y(sr[crop:-crop, crop:-crop]).astype(np.float64)
    b = _basicsr_y(hr[crop:-crop, crop:-crop]).astype(np.float64)
    return 10.0 * np.log10(255.0 * 255.0 / np.mean((a - b) ** 2))


def _basicsr_ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int) -> float:
    img = _basicsr_y(sr[crop:-crop, crop:-crop]).astype(np.float64)
    img2 = _basicsr_y(hr[crop:-crop, crop:-crop]).astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    f = lambda x: cv2.filter2D(x, -1, window)[5:-5, 5:-5]             # 'valid' region of the 11x11 window
    mu1, mu2 = f(img), f(img2)
    s1, s2, s12 = f(img ** 2) - mu1 ** 2, f(img2 ** 2) - mu2 ** 2, f(img * img2) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1 ** 2 + mu2 ** 2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def test_paper_l2_is_mse_of_rgb_in_minus_one_one_and_mse_is_on_unit_range():
    sr, hr = _pair()
    a, b = sr / 255.0, hr / 255.0
    assert metrics.mse(sr, hr) == pytest.approx(np.mean((a - b) ** 2), rel=1e-12)
    signed = lambda u8: u8 / 127.5 - 1.0                              # the networks' [-1,1] images
    assert metrics.l2(sr, hr) == pytest.approx(np.mean((signed(sr) - signed(hr)) ** 2), rel=1e-12)
    assert metrics.l2(sr, hr) == pytest.approx(4 * metrics.mse(sr, hr), rel=1e-12)
    # float [0,1] input is taken as is (not divided again)
    assert metrics.l2(a, b) == pytest.approx(metrics.l2(sr, hr), rel=1e-12)
    assert metrics.mse(hr, sr) == metrics.mse(sr, hr) > 0


def test_psnr_matches_numpy_and_shaves():
    sr, hr = _pair()
    a, b = sr / 255.0, hr / 255.0
    assert metrics.psnr(sr, hr, 0) == pytest.approx(-10 * np.log10(np.mean((a - b) ** 2)), rel=1e-12)
    assert metrics.psnr(sr, hr) == metrics.psnr(sr, hr, 0)
    assert metrics.psnr_y(sr, hr) == metrics.psnr_y(sr, hr, 0) != metrics.psnr_y(sr, hr, 1)
    assert metrics.ssim_y(sr, hr) == metrics.ssim_y(sr, hr, 0) != metrics.ssim_y(sr, hr, 1)
    shaved = np.mean((a[4:-4, 4:-4] - b[4:-4, 4:-4]) ** 2)
    assert metrics.psnr(sr, hr, 4) == pytest.approx(10 * np.log10(1 / shaved), rel=1e-12)
    assert metrics.psnr(sr, hr, 4) != pytest.approx(metrics.psnr(sr, hr, 0), rel=1e-6)
    assert metrics.psnr(sr, hr, 0) == pytest.approx(10 * np.log10(4 / metrics.l2(sr, hr)), rel=1e-12)


def test_psnr_y_uses_matlab_luma_and_shaves():
    sr, hr = _pair(1)
    y = lambda im: 16 + (65.481 * im[..., 0] + 128.553 * im[..., 1] + 24.966 * im[..., 2]) / 255.0
    ys, yh = y(sr.astype(float))[3:-3, 3:-3], y(hr.astype(float))[3:-3, 3:-3]
    expected = 10 * math.log10(255 ** 2 / np.mean((ys - yh) ** 2))
    assert metrics.psnr_y(sr, hr, 3) == pytest.approx(expected, rel=1e-12)
    assert metrics.luma(np.full((8, 8, 3), 255, np.uint8)) == pytest.approx(np.full((8, 8), 235.0))
    assert metrics.luma(np.zeros((8, 8, 3), np.uint8)) == pytest.approx(np.full((8, 8), 16.0))
    assert metrics.luma(sr) == pytest.approx(y(sr.astype(float)), abs=1e-9)


@pytest.mark.parametrize("seed,scale", [(0, 4), (1, 2), (2, 3), (3, 4)])
def test_y_channel_psnr_and_ssim_match_basicsr(seed, scale):
    """BasicSR calculate_psnr / calculate_ssim with test_y_channel=True, crop_border=scale, to 1e-4."""
    sr, hr = _smooth_pair(seed) if seed % 2 == 0 else _pair(seed, size=40)
    assert metrics.psnr_y(sr, hr, scale) == pytest.approx(_basicsr_psnr_y(sr, hr, scale), abs=1e-4)
    assert metrics.ssim_y(sr, hr, scale) == pytest.approx(_basicsr_ssim_y(sr, hr, scale), abs=1e-4)
    assert metrics.ssim_y(sr, hr, scale) != pytest.approx(_basicsr_ssim_y(sr, hr, scale + 1), abs=1e-6)


def test_ssim_y_of_identical_images_is_one_and_drops_with_error():
    sr, hr = _smooth_pair(4)
    assert metrics.ssim_y(hr, hr, 4) == pytest.approx(1.0)
    assert 0 < metrics.ssim_y(sr, hr, 4) < 1


def test_paper_ssim_error_is_zhang_dssim_with_a_uniform_window():
    for seed in range(3):
        sr, hr = _pair(seed) if seed else _smooth_pair(seed)
        row = metrics.image_metrics(sr, hr, scale=4)
        assert row["ssim_error"] == pytest.approx(_dssim_zhang_by_hand(sr, hr), abs=1e-9)
        # not the Gaussian-window SSIM: the two conventions differ on these images
        assert row["ssim_error"] != pytest.approx(metrics.ssim_error(row["ssim"]), abs=1e-4)


def test_ssim_matches_wang_et_al_by_hand():
    for seed in range(3):
        sr, hr = _pair(seed)
        assert metrics.ssim(sr, hr) == pytest.approx(_ssim_gaussian_by_hand(sr / 255.0, hr / 255.0), abs=1e-9)
    sr, hr = _pair(5)
    value = metrics.ssim(sr, hr)
    assert 0 < value < 1
    assert metrics.ssim_error(value) == pytest.approx((1 - value) / 2)
    assert metrics.ssim_error(0.6) == pytest.approx(0.2) and metrics.ssim_error(1.0) == 0.0


def test_image_metrics_columns_and_identical_images():
    _, hr = _pair(2)
    row = metrics.image_metrics(hr, hr, scale=4)
    assert list(row) == ["l2", "ssim_error", "mse", "ssim", "psnr", "psnr_y", "ssim_y"]
    assert row["l2"] == 0 and row["mse"] == 0
    assert row["ssim"] == pytest.approx(1.0) and row["ssim_error"] == pytest.approx(0.0)
    assert row["ssim_y"] == pytest.approx(1.0)
    assert math.isinf(row["psnr"]) and math.isinf(row["psnr_y"]) and row["psnr"] > 0
    sr, hr = _smooth_pair(3)
    row = metrics.image_metrics(sr, hr, scale=4)
    assert row["psnr"] == pytest.approx(metrics.psnr(sr, hr, 4)) and row["psnr_y"] == pytest.approx(metrics.psnr_y(sr, hr, 4))
    assert row["ssim_y"] == pytest.approx(metrics.ssim_y(sr, hr, 4))
    assert row["psnr"] != pytest.approx(metrics.psnr(sr, hr, 0), abs=1e-6)


def test_aggregate_caps_psnr_and_propagates_na():
    mean, std = metrics.aggregate([math.inf, 30.0], "psnr")
    assert mean == pytest.approx((metrics.PSNR_CAP + 30) / 2) and std == pytest.approx((metrics.PSNR_CAP - 30) / 2)
    assert metrics.PSNR_CAP == 100.0
    assert metrics.aggregate([math.inf, 30.0], "psnr_y")[0] == pytest.approx(65.0)
    assert metrics.aggregate([120.0, 30.0], "psnr")[0] == pytest.approx(65.0)     # capped, not only inf
    assert metrics.aggregate([math.inf, 1.0], "ssim")[0] == math.inf             # only PSNR columns are capped
    assert metrics.aggregate([1.0, 3.0], "l2") == (2.0, 1.0)                     # population std
    assert metrics.aggregate([1.0, 3.0]) == (2.0, 1.0)
    assert metrics.aggregate([], "l2") == (None, None)
    assert metrics.aggregate([0.1, None], "pe_squeeze") == (None, None)
    assert metrics.aggregate([0.1, float("nan")], "pe_squeeze") == (None, None)
    assert metrics.aggregate([None, 0.1], "pe_squeeze") == (None, None)


def test_shave_refuses_images_smaller_than_the_border():
    with pytest.raises(ValueError, match="cannot shave 3 pixels from a 6x6 image"):
        metrics.psnr(np.zeros((6, 6, 3), np.uint8), np.zeros((6, 6, 3), np.uint8), 3)
    with pytest.raises(ValueError):
        metrics.shave(np.zeros((20, 6)), 3)                  # too narrow, tall enough
    with pytest.raises(ValueError, match="from a 6x20 image"):
        metrics.shave(np.zeros((6, 20)), 3)                  # too short, wide enough
    with pytest.raises(ValueError):
        metrics.shave(np.zeros((5, 20)), 1 + 2)
    assert metrics.shave(np.zeros((7, 7)), 3).shape == (1, 1)
    image = np.arange(25.0).reshape(5, 5)
    assert metrics.shave(image, 0) is image and metrics.shave(image, -1) is image
    assert metrics.shave(image, 1).tolist() == image[1:4, 1:4].tolist()
