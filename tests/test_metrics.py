"""Low-level metrics: the numpy reference against independent computations on synthetic pairs, and the
batched torch versions (metrics.batch_*) against the numpy reference on real photographs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, uniform_filter
from skimage import data
from skimage.metrics import structural_similarity

from pipeline.evaluation import metrics


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


def test_greyscale_image_is_scored_on_its_grey_values():
    """grey=True: PSNR-Y and SSIM-Y of a greyscale image are those of its grey values (MATLAB scripts on a
    one-channel image); on the Y of an RGB copy they would be 20 log10(255/219) = 1.32 dB higher."""
    hr_grey = data.camera()[200:264, 180:244]
    sr_grey = cv2.resize(cv2.resize(hr_grey, (16, 16), interpolation=cv2.INTER_AREA), (64, 64),
                         interpolation=cv2.INTER_CUBIC)
    sr, hr = (np.repeat(g[..., None], 3, axis=2) for g in (sr_grey, hr_grey))
    a, b = sr_grey[4:-4, 4:-4].astype(np.float64), hr_grey[4:-4, 4:-4].astype(np.float64)
    grey_psnr = 10 * math.log10(255 ** 2 / np.mean((a - b) ** 2))
    assert metrics.psnr_y(sr, hr, 4, grey=True) == pytest.approx(grey_psnr, abs=1e-9)
    assert metrics.psnr_y(sr, hr, 4) == pytest.approx(grey_psnr + 20 * math.log10(255 / 219), abs=1e-9)
    assert metrics.ssim_y(sr, hr, 4, grey=True) == pytest.approx(structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255.0), abs=1e-12)
    assert metrics.image_metrics(sr, hr, 4, grey=True)["psnr_y"] == pytest.approx(grey_psnr, abs=1e-9)


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


# ---- the batched torch versions against the numpy / scikit-image reference, on real photographs
TORCH_ATOL = 1e-9        # absolute; the brief asks 1e-6 or better, float64 on both sides gives ~1e-13
PHOTOS = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea}


def _degraded(photo: np.ndarray, top: int, left: int, h: int, w: int) -> dict[str, np.ndarray]:
    """SR-like versions of the h x w crop at (top, left): bicubic x4 round trip, blurred, noisy, shifted."""
    hr = photo[top:top + h, left:left + w]
    small = cv2.resize(hr, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(h * w).normal(0, 8, hr.shape)
    return {"bicubic": cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC),
            "blurred": cv2.GaussianBlur(hr, (0, 0), 1.3),
            "noisy": np.clip(np.round(hr + noise), 0, 255).astype(np.uint8),
            "shifted": photo[top + 1:top + 1 + h, left + 2:left + 2 + w]}


def _real_pairs(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """SR and HR uint8 NxHxWx3: every photo's crop against each of its degraded versions."""
    srs, hrs = [], []
    for photo in (load() for load in PHOTOS.values()):
        for sr in _degraded(photo, 90, 130, h, w).values():
            srs.append(sr)
            hrs.append(photo[90:90 + h, 130:130 + w])
    return np.stack(srs), np.stack(hrs)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


# (height, width, scale): the default crops; odd sizes; 19x21 at x4 leaves 11x13 after the shave, the
# smallest luma the 11x11 window fits; 96x128 at x2 is scored on the CPU in chunks of two images
SIZES = [(48, 48, 4), (37, 53, 3), (19, 21, 4), (96, 128, 2)]


@pytest.mark.parametrize("h,w,scale", SIZES)
def test_batch_metrics_equal_the_numpy_reference_on_real_photos(h, w, scale):
    sr, hr = _real_pairs(h, w)
    batched = metrics.batch_metrics(_nchw(sr), _nchw(hr), scale)
    assert list(batched) == list(metrics.image_metrics(sr[0], hr[0], scale))
    assert all(v.dtype == torch.float64 and v.shape == (len(sr),) for v in batched.values())
    for i in range(len(sr)):
        for key, value in metrics.image_metrics(sr[i], hr[i], scale).items():
            assert float(batched[key][i]) == pytest.approx(value, abs=TORCH_ATOL), (key, i)
    # the degradations are told apart: no metric is constant over the batch
    assert all(float(v.std()) > 1e-4 for v in batched.values())


def test_each_batch_function_equals_its_numpy_reference():
    sr, hr = _real_pairs(40, 44)
    s, t = _nchw(sr), _nchw(hr)
    pairs = list(zip(sr, hr))
    for batch_fn, fn in [(metrics.batch_l2, metrics.l2), (metrics.batch_mse, metrics.mse),
                         (metrics.batch_ssim_uniform, metrics.ssim_uniform), (metrics.batch_ssim, metrics.ssim),
                         (metrics.batch_psnr, metrics.psnr), (metrics.batch_psnr_y, metrics.psnr_y),
                         (metrics.batch_ssim_y, metrics.ssim_y)]:
        assert batch_fn(s, t).tolist() == pytest.approx([fn(a, b) for a, b in pairs], abs=TORCH_ATOL), fn.__name__
    for scale in (2, 5):
        assert metrics.batch_psnr(s, t, scale).tolist() == pytest.approx(
            [metrics.psnr(a, b, scale) for a, b in pairs], abs=TORCH_ATOL)
        assert metrics.batch_ssim_y(s, t, scale).tolist() == pytest.approx(
            [metrics.ssim_y(a, b, scale) for a, b in pairs], abs=TORCH_ATOL)
    assert metrics.batch_luma(s)[:, 0].numpy() == pytest.approx(np.stack([metrics.luma(a) for a in sr]), abs=1e-10)


@pytest.mark.parametrize("h,w,scale", [(48, 48, 4), (96, 128, 2)])
def test_batched_equals_one_by_one(h, w, scale):
    sr, hr = _nchw(_real_pairs(h, w)[0]), _nchw(_real_pairs(h, w)[1])
    batched = metrics.batch_metrics(sr, hr, scale)
    single = [metrics.batch_metrics(sr[i:i + 1], hr[i:i + 1], scale) for i in range(len(sr))]
    for key, values in batched.items():
        assert values.tolist() == pytest.approx([float(s[key][0]) for s in single], abs=1e-12), key
    order = torch.arange(len(sr)).flip(0)                  # each value belongs to its own pair
    flipped = metrics.batch_metrics(sr[order], hr[order], scale)
    assert all(torch.allclose(flipped[k], batched[k][order], rtol=0, atol=1e-12) for k in batched)


def test_uint8_and_float_inputs_agree():
    sr, hr = _real_pairs(37, 53)
    from_u8 = metrics.batch_metrics(_nchw(sr), _nchw(hr), 3)
    unit64 = metrics.batch_metrics(_nchw(sr) / 255.0, _nchw(hr).double() / 255.0, 3)   # float32 and float64
    for key in from_u8:
        assert torch.allclose(unit64[key].double(), from_u8[key], rtol=0, atol=1e-5), key
    exact = metrics.batch_metrics(_nchw(sr).double() / 255.0, _nchw(hr).double() / 255.0, 3)
    for key in from_u8:
        assert torch.allclose(exact[key], from_u8[key], rtol=0, atol=1e-12), key
    # float32 [0,1] images (a generator's output) are taken as is, as the numpy reference takes them
    sr32, hr32 = sr.astype(np.float32) / 255, hr.astype(np.float32) / 255
    float_in = metrics.batch_metrics(_nchw(sr32), _nchw(hr32), 3)
    assert float_in["ssim"].tolist() == pytest.approx([metrics.ssim(a, b) for a, b in zip(sr32, hr32)], abs=TORCH_ATOL)
    assert float_in["psnr_y"].tolist() == pytest.approx(
        [metrics.psnr_y(a, b, 3) for a, b in zip(sr32, hr32)], abs=TORCH_ATOL)


def test_batch_metrics_of_identical_images_are_perfect_per_image():
    sr, hr = _real_pairs(48, 48)
    values = metrics.batch_metrics(_nchw(np.concatenate([hr[:2], sr[2:4]])), _nchw(hr[:4]), 4)
    assert values["psnr"][:2].isinf().all() and values["psnr_y"][:2].isinf().all() and (values["psnr"][:2] > 0).all()
    assert values["psnr"][2:].isfinite().all() and values["psnr_y"][2:].isfinite().all()
    assert values["l2"][:2].tolist() == [0, 0] and values["ssim_error"][:2].tolist() == [0, 0]
    assert values["ssim"][:2].tolist() == [1, 1] and values["ssim_y"][:2].tolist() == [1, 1]
    assert (values["ssim_error"][2:] > 0).all()


def test_batch_metrics_refuse_what_the_reference_refuses():
    tiny = torch.zeros(2, 3, 6, 6, dtype=torch.uint8)
    with pytest.raises(ValueError, match="cannot shave 3 pixels from a 6x6 image"):
        metrics.batch_psnr(tiny, tiny, 3)
    with pytest.raises(ValueError, match="cannot shave 3 pixels from a 6x20 image"):
        metrics.batch_shave(torch.zeros(1, 1, 6, 20), 3)
    with pytest.raises(ValueError, match="6x6 image is smaller than the 7x7 SSIM window"):
        metrics.batch_ssim_uniform(tiny, tiny)
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        small = torch.zeros(1, 3, 18, 30, dtype=torch.uint8)    # 10x22 after the shave
        metrics.batch_ssim_y(small, small, 4)
    with pytest.raises(ValueError, match="Nx3xHxW"):
        metrics.batch_mse(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.batch_metrics(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 30), 4)
