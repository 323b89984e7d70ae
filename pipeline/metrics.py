"""Low-level image metrics (GCN paper 4.2): L2, SSIM and its error, PSNR on RGB and on Y.

Conventions (quoted by the report):

- Images are RGB, HxWx3, compared as floats in [0,1] (uint8 input is divided by 255).
- ``l2``: mean squared error over all pixels and the three channels, RGB in [0,1], whole image.
- ``ssim``: scikit-image ``structural_similarity`` with Wang et al.'s settings: Gaussian window
  (sigma 1.5, truncated at 3.5 sigma, i.e. 11x11), population covariances
  (``use_sample_covariance=False``), K1 = 0.01, K2 = 0.03, ``data_range=1``, computed per
  channel and averaged over RGB, whole image.
- ``ssim_error`` = (1 - SSIM) / 2, in [0,1], lower is better: what the GCN paper's "SSIM"
  column (0.13-0.24, lower is better) appears to be.
- ``psnr``: 10 log10(1 / MSE) on RGB in [0,1] after shaving ``scale`` pixels from every border
  (the SR literature's convention: border pixels cannot be reconstructed).
- ``psnr_y``: the same on the luma channel of ITU-R BT.601 as in MATLAB's ``rgb2ycbcr``
  (Y = 16 + 65.481 R + 128.553 G + 24.966 B, R,G,B in [0,1], so Y in [16,235]) with a peak
  of 255, after the same shave.
- Identical images give PSNR = inf: per-image values keep ``inf``; means and standard
  deviations use per-image PSNR capped at ``PSNR_CAP`` dB (= an MSE floor of 1e-10 on [0,1]
  data) so that one perfect image cannot turn a mean into inf (see `aggregate`).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0
BT601_Y = np.array([65.481, 128.553, 24.966])    # MATLAB rgb2ycbcr, RGB in [0,1] -> Y offset 16


def as_unit(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 [0,255] or float [0,1] -> float64 [0,1]."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    return image.astype(np.float64)


def shave(image: np.ndarray, border: int) -> np.ndarray:
    """Drop `border` pixels from each side (rows and columns) of an HxW(xC) image."""
    if border <= 0:
        return image
    if image.shape[0] <= 2 * border or image.shape[1] <= 2 * border:
        raise ValueError(f"cannot shave {border} pixels from a {image.shape[0]}x{image.shape[1]} image")
    return image[border:-border, border:-border]


def l2(sr: np.ndarray, hr: np.ndarray) -> float:
    """Mean squared error of RGB in [0,1] over the whole image."""
    return float(np.mean((as_unit(sr) - as_unit(hr)) ** 2))


def ssim(sr: np.ndarray, hr: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5), RGB in [0,1], mean over channels."""
    return float(structural_similarity(as_unit(sr), as_unit(hr), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0, channel_axis=-1))


def ssim_error(ssim_value: float) -> float:
    """(1 - SSIM) / 2: the paper's "SSIM" column convention, lower is better."""
    return (1.0 - ssim_value) / 2.0


def _psnr(mse: float, peak: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def psnr(sr: np.ndarray, hr: np.ndarray, scale: int = 0) -> float:
    """PSNR (dB) of RGB in [0,1] with `scale` pixels shaved from each border; inf if identical."""
    a, b = shave(as_unit(sr), scale), shave(as_unit(hr), scale)
    return _psnr(float(np.mean((a - b) ** 2)), 1.0)


def luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma Y in [16,235] (MATLAB rgb2ycbcr) of an RGB image."""
    return 16.0 + as_unit(image) @ BT601_Y


def psnr_y(sr: np.ndarray, hr: np.ndarray, scale: int = 0) -> float:
    """PSNR (dB, peak 255) of the BT.601 luma with `scale` pixels shaved; inf if identical."""
    a, b = shave(luma(sr), scale), shave(luma(hr), scale)
    return _psnr(float(np.mean((a - b) ** 2)), 255.0)


def image_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """All low-level metrics of one SR image against its HR reference (HxWx3)."""
    s = ssim(sr, hr)
    return {"l2": l2(sr, hr), "ssim": s, "ssim_error": ssim_error(s),
            "psnr": psnr(sr, hr, scale), "psnr_y": psnr_y(sr, hr, scale)}


def aggregate(values: list[float | None], key: str = "") -> tuple[float | None, float | None]:
    """Mean and population standard deviation of per-image values; None when any is n/a.

    PSNR columns (``key`` starting with "psnr") are capped at PSNR_CAP before averaging, so an
    identical pair (inf dB) counts as PSNR_CAP dB instead of making the mean inf.
    """
    if not values or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
        return None, None
    array = np.asarray(values, dtype=np.float64)
    if key.startswith("psnr"):
        array = np.minimum(array, PSNR_CAP)
    return float(array.mean()), float(array.std())
