"""Low-level image metrics (GCN paper 4.2): the paper's L2 and SSIM, plus MSE, SSIM and PSNR on RGB and Y.

The paper computes L2 and SSIM with the code of Zhang et al. [44] (PerceptualSimilarity 2018,
``DistModel(model='L2'|'SSIM', colorspace='RGB')``). bench/metric-convention.md shows, with the
cited code and numbers, that the paper's columns are on that scale; this module reproduces it.

Paper-compared columns (the names the paper's tables use):

- ``l2``: mean squared error of RGB in [-1,1] (the images as the networks see them; = 4 x MSE
  of RGB in [0,1]), whole image: [44]'s ``L2`` with ``colorspace='RGB'``.
- ``ssim_error``: DSSIM = (1 - SSIM) / 2, lower is better, with scikit-image's default SSIM
  (7x7 uniform window, sample covariance, K1 = 0.01, K2 = 0.03, data range of RGB, mean over
  the three channels), whole image: [44]'s ``dssim`` with ``colorspace='RGB'``.

Extra columns (not in the paper):

- ``mse``: mean squared error of RGB in [0,1], whole image.
- ``ssim``: SSIM with Wang et al.'s settings: Gaussian window (sigma 1.5, truncated at 3.5
  sigma, i.e. 11x11), population covariances, RGB in [0,1], mean over channels, whole image.
- ``psnr``: 10 log10(1 / MSE) on RGB in [0,1] after shaving ``scale`` pixels from every border
  (the SR literature's convention: border pixels cannot be reconstructed).
- ``psnr_y`` and ``ssim_y``: on the luma of MATLAB's ``rgb2ycbcr`` (Y = 16 + 65.481 R +
  128.553 G + 24.966 B, R,G,B in [0,1], Y in [16,235], not rounded) with a peak / data range of
  255, after the same shave; ``ssim_y`` uses the Gaussian 11x11 window of Wang et al. These are
  BasicSR's ``calculate_psnr`` / ``calculate_ssim`` with ``test_y_channel=True`` and
  ``crop_border=scale`` (equal to 1e-4 on uint8 images: both use float, unrounded Y).
- Identical images give PSNR = inf: per-image values keep ``inf``; means and standard
  deviations use per-image PSNR capped at ``PSNR_CAP`` dB (= an MSE floor of 1e-10 on [0,1]
  data) so that one perfect image cannot turn a mean into inf (see `aggregate`).
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0


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
    """The paper's L2: mean squared error of RGB in [-1,1] over the whole image (= 4 x `mse`)."""
    return float(np.mean((2.0 * as_unit(sr) - 2.0 * as_unit(hr)) ** 2))


def mse(sr: np.ndarray, hr: np.ndarray) -> float:
    """Mean squared error of RGB in [0,1] over the whole image."""
    return float(np.mean((as_unit(sr) - as_unit(hr)) ** 2))


def ssim_uniform(sr: np.ndarray, hr: np.ndarray) -> float:
    """SSIM as [44] computes it: scikit-image's defaults (7x7 uniform window, sample covariance), RGB mean."""
    return float(structural_similarity(as_unit(sr), as_unit(hr), data_range=1.0, channel_axis=-1))


def ssim(sr: np.ndarray, hr: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5), RGB in [0,1], mean over channels."""
    return float(structural_similarity(as_unit(sr), as_unit(hr), gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=1.0, channel_axis=-1))


def ssim_error(ssim_value: float) -> float:
    """DSSIM = (1 - SSIM) / 2 ([44]'s ``dssim``): the paper's "SSIM" column, lower is better."""
    return (1.0 - ssim_value) / 2.0


def _psnr(squared_error: float, peak: float) -> float:
    return math.inf if squared_error == 0 else 10.0 * math.log10(peak * peak / squared_error)


def psnr(sr: np.ndarray, hr: np.ndarray, scale: int = 0) -> float:
    """PSNR (dB) of RGB in [0,1] with `scale` pixels shaved from each border; inf if identical."""
    a, b = shave(as_unit(sr), scale), shave(as_unit(hr), scale)
    return _psnr(float(np.mean((a - b) ** 2)), 1.0)


def luma(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma Y in [16,235] (ITU-R BT.601), float and unrounded, of an RGB image."""
    return rgb2ycbcr(as_unit(image))[..., 0]


def psnr_y(sr: np.ndarray, hr: np.ndarray, scale: int = 0) -> float:
    """PSNR (dB, peak 255) of the luma with `scale` pixels shaved; inf if identical (BasicSR's Y PSNR)."""
    a, b = shave(luma(sr), scale), shave(luma(hr), scale)
    return _psnr(float(np.mean((a - b) ** 2)), 255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, scale: int = 0) -> float:
    """SSIM of the luma (Gaussian 11x11, sigma 1.5, data range 255) with `scale` pixels shaved (BasicSR's Y SSIM)."""
    a, b = shave(luma(sr), scale), shave(luma(hr), scale)
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255.0))


def image_metrics(sr: np.ndarray, hr: np.ndarray, scale: int) -> dict[str, float]:
    """All low-level metrics of one SR image against its HR reference (HxWx3), paper columns first."""
    return {"l2": l2(sr, hr), "ssim_error": ssim_error(ssim_uniform(sr, hr)),
            "mse": mse(sr, hr), "ssim": ssim(sr, hr),
            "psnr": psnr(sr, hr, scale), "psnr_y": psnr_y(sr, hr, scale), "ssim_y": ssim_y(sr, hr, scale)}


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
