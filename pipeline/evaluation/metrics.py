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
  ``crop_border=scale`` (equal to 1e-4 on uint8 images: both use float, unrounded Y). The
  standard SR protocol scores a greyscale test image (``grey=True``) on its grey values instead
  (``grey_values``: the same luma stretched back to [0, 255]), as the published MATLAB scripts do.
- Identical images give PSNR = inf: per-image values keep ``inf``; means and standard
  deviations use per-image PSNR capped at ``PSNR_CAP`` dB (= an MSE floor of 1e-10 on [0,1]
  data) so that one perfect image cannot turn a mean into inf (see `aggregate`).

Two implementations of the same definitions: the numpy / scikit-image functions (one HxWx3 image,
the reference) and the ``batch_*`` torch functions (Nx3xHxW tensors on any device, float64, one
value per image), which evaluation and training validation use. The tests hold them equal to 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0
K1, K2 = 0.01, 0.03                        # SSIM's stabilising constants (Wang et al. 2004; scikit-image's)
UNIFORM_SIZE = 7                           # scikit-image's default SSIM window
GAUSSIAN_SIGMA, GAUSSIAN_TRUNCATE = 1.5, 3.5   # Wang et al.'s window as scikit-image builds it (11x11)
LUMA_WEIGHTS = (65.481, 128.553, 24.966)   # MATLAB rgb2ycbcr: Y = 16 + 65.481 R + 128.553 G + 24.966 B
CPU_CHUNK_PIXELS = 1 << 15                 # batch_metrics on the CPU: images per chunk x H x W (measured best)


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


def ssim_error(ssim_value: float | torch.Tensor) -> float | torch.Tensor:
    """DSSIM = (1 - SSIM) / 2 ([44]'s ``dssim``): the paper's "SSIM" column, lower is better (a value or a tensor)."""
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


def grey_values(image: np.ndarray) -> np.ndarray:
    """The full-range luma in [0, 255]: (Y - 16) * 255 / 219, weights 65.481 : 128.553 : 24.966 summing to 1.

    Equal to the grey value where R = G = B, so a greyscale image is scored on its own values, as
    the published MATLAB scripts score a one-channel image; MATLAB's Y would squeeze them into
    [16, 235] and add 20 log10(255 / 219) = 1.32 dB to its PSNR.
    """
    return (luma(image) - 16.0) * 255.0 / 219.0


def _y_channel(image: np.ndarray, grey: bool) -> np.ndarray:
    return grey_values(image) if grey else luma(image)


def psnr_y(sr: np.ndarray, hr: np.ndarray, scale: int = 0, grey: bool = False) -> float:
    """PSNR (dB, peak 255) of the luma with `scale` pixels shaved; inf if identical (BasicSR's Y PSNR).

    `grey`: the reference is a greyscale image, scored on its grey values (`grey_values`).
    """
    a, b = shave(_y_channel(sr, grey), scale), shave(_y_channel(hr, grey), scale)
    return _psnr(float(np.mean((a - b) ** 2)), 255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, scale: int = 0, grey: bool = False) -> float:
    """SSIM of the luma (Gaussian 11x11, sigma 1.5, data range 255) with `scale` pixels shaved (BasicSR's Y SSIM).

    `grey`: on the grey values of a greyscale reference (`grey_values`), as `psnr_y`.
    """
    a, b = shave(_y_channel(sr, grey), scale), shave(_y_channel(hr, grey), scale)
    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                       data_range=255.0))


def image_metrics(sr: np.ndarray, hr: np.ndarray, scale: int, grey: bool = False) -> dict[str, float]:
    """All low-level metrics of one SR image against its HR reference (HxWx3), paper columns first.

    `grey`: the reference is greyscale; PSNR-Y and SSIM-Y are then taken on grey values (`grey_values`).
    """
    return {"l2": l2(sr, hr), "ssim_error": ssim_error(ssim_uniform(sr, hr)),
            "mse": mse(sr, hr), "ssim": ssim(sr, hr), "psnr": psnr(sr, hr, scale),
            "psnr_y": psnr_y(sr, hr, scale, grey), "ssim_y": ssim_y(sr, hr, scale, grey)}


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


# ----------------------------------------------------------------------------- batched torch versions
# The same definitions as above on Nx3xHxW tensors, computed in float64 on the tensors' device.
# scikit-image filters the whole image (reflect padding) and then averages the SSIM map without
# its (win_size - 1) // 2 border pixels: exactly the positions whose window lies inside the image,
# so a "valid" correlation gives the same map without any padding.

def batch_as_unit(images: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW uint8 [0,255] or float [0,1] -> float64 [0,1], on the same device."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected an Nx3xHxW batch of RGB images, got shape {tuple(images.shape)}")
    unit = images.to(torch.float64, memory_format=torch.contiguous_format)   # NCHW: the filters run ~1.5x faster
    return unit / 255.0 if images.dtype == torch.uint8 else unit


def batch_shave(images: torch.Tensor, border: int) -> torch.Tensor:
    """Drop `border` pixels from each side (rows and columns) of every image of an NxCxHxW batch."""
    if border <= 0:
        return images
    height, width = images.shape[-2:]
    if height <= 2 * border or width <= 2 * border:
        raise ValueError(f"cannot shave {border} pixels from a {height}x{width} image")
    return images[..., border:-border, border:-border]


def batch_luma(images: torch.Tensor) -> torch.Tensor:
    """MATLAB ``rgb2ycbcr`` luma (as `luma`) of an Nx3xHxW batch: float64 Nx1xHxW, Y in [16,235]."""
    unit = batch_as_unit(images)
    weights = torch.tensor(LUMA_WEIGHTS, dtype=torch.float64, device=unit.device).view(1, 3, 1, 1)
    return 16.0 + (unit * weights).sum(dim=1, keepdim=True)


def uniform_window(size: int = UNIFORM_SIZE) -> torch.Tensor:
    """The 1-D factor of scikit-image's default size x size uniform window (float64, sums to 1)."""
    return torch.full((size,), 1.0 / size, dtype=torch.float64)


def gaussian_window(sigma: float = GAUSSIAN_SIGMA, truncate: float = GAUSSIAN_TRUNCATE) -> torch.Tensor:
    """The 1-D factor of scipy's Gaussian filter (radius int(truncate * sigma + 0.5): 11 taps at sigma 1.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (x / sigma) ** 2)
    return weights / weights.sum()


def _filter_valid(images: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of NxCxHxW with the separable window `window` x `window`, valid positions only.

    Weighted sums of shifted views, rows then columns: float64 convolutions have no fast kernel on
    the CPU (this is several times faster there than conv2d) and the result is the same to rounding.
    """
    weights = window.tolist()
    size = len(weights)
    height, width = images.shape[-2:]
    rows = images[..., :height - size + 1, :] * weights[0]
    for i in range(1, size):
        rows.add_(images[..., i:i + height - size + 1, :], alpha=weights[i])
    out = rows[..., :width - size + 1] * weights[0]
    for i in range(1, size):
        out.add_(rows[..., i:i + width - size + 1], alpha=weights[i])
    return out


def batch_structural_similarity(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, data_range: float,
                                sample_covariance: bool) -> torch.Tensor:
    """Mean SSIM per image of two float64 NxCxHxW batches, averaged over channels (scikit-image's
    ``structural_similarity`` with this window, ``data_range`` and covariance, ``channel_axis``)."""
    size = window.numel()
    if min(x.shape[-2:]) < size:
        raise ValueError(f"a {x.shape[-2]}x{x.shape[-1]} image is smaller than the {size}x{size} SSIM window")
    channels = x.shape[1]
    means = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)   # one pass for the five
    ux, uy, uxx, uyy, uxy = means.split(channels, dim=1)
    points = size * size
    cov_norm = points / (points - 1) if sample_covariance else 1.0   # sample vs population (Wang et al.)
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(-2, -1)).mean(dim=-1)


def _batch_mean_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).mean(dim=(-3, -2, -1))


def _batch_psnr(squared_error: torch.Tensor, peak: float) -> torch.Tensor:
    value = 10.0 * torch.log10(peak * peak / squared_error)
    return torch.where(squared_error == 0, torch.full_like(value, math.inf), value)


def batch_l2(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """`l2` of every image pair of two Nx3xHxW batches: MSE of RGB in [-1,1] (N values)."""
    return _batch_mean_squared(2.0 * batch_as_unit(sr), 2.0 * batch_as_unit(hr))


def batch_mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """`mse` of every image pair: MSE of RGB in [0,1] (N values)."""
    return _batch_mean_squared(batch_as_unit(sr), batch_as_unit(hr))


def batch_ssim_uniform(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """`ssim_uniform` of every image pair: 7x7 uniform window, sample covariance, RGB in [0,1], RGB mean."""
    return batch_structural_similarity(batch_as_unit(sr), batch_as_unit(hr), uniform_window(), 1.0, True)


def batch_ssim(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """`ssim` of every image pair: Gaussian 11x11 window, population covariance, RGB in [0,1], RGB mean."""
    return batch_structural_similarity(batch_as_unit(sr), batch_as_unit(hr), gaussian_window(), 1.0, False)


def batch_psnr(sr: torch.Tensor, hr: torch.Tensor, scale: int = 0) -> torch.Tensor:
    """`psnr` of every image pair: RGB in [0,1], `scale` pixels shaved; inf where identical."""
    a, b = batch_shave(batch_as_unit(sr), scale), batch_shave(batch_as_unit(hr), scale)
    return _batch_psnr(_batch_mean_squared(a, b), 1.0)


def batch_psnr_y(sr: torch.Tensor, hr: torch.Tensor, scale: int = 0) -> torch.Tensor:
    """`psnr_y` of every image pair: luma, peak 255, `scale` pixels shaved; inf where identical."""
    a, b = batch_shave(batch_luma(sr), scale), batch_shave(batch_luma(hr), scale)
    return _batch_psnr(_batch_mean_squared(a, b), 255.0)


def batch_ssim_y(sr: torch.Tensor, hr: torch.Tensor, scale: int = 0) -> torch.Tensor:
    """`ssim_y` of every image pair: luma, Gaussian 11x11, data range 255, `scale` pixels shaved."""
    a, b = batch_shave(batch_luma(sr), scale), batch_shave(batch_luma(hr), scale)
    return batch_structural_similarity(a, b, gaussian_window(), 255.0, False)


def batch_metrics(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """`image_metrics` of every pair of two Nx3xHxW batches (uint8 or [0,1] float): the same keys,
    each a float64 tensor of N values on the batches' device.

    A GPU takes the whole batch at once; on the CPU the batch goes in chunks of about
    CPU_CHUNK_PIXELS pixels per image plane, which stay in the caches (2-3x faster than a whole batch).
    """
    if sr.shape != hr.shape:
        raise ValueError(f"SR batch {tuple(sr.shape)} and HR batch {tuple(hr.shape)} differ in shape")
    chunk = max(1, CPU_CHUNK_PIXELS // (sr.shape[-2] * sr.shape[-1]))
    if sr.device.type != "cpu" or len(sr) <= chunk:
        return _batch_metrics(sr, hr, scale)
    parts = [_batch_metrics(sr[i:i + chunk], hr[i:i + chunk], scale) for i in range(0, len(sr), chunk)]
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _batch_metrics(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    sr_unit, hr_unit = batch_as_unit(sr), batch_as_unit(hr)     # converted once, taken as is below
    return {"l2": batch_l2(sr_unit, hr_unit), "ssim_error": ssim_error(batch_ssim_uniform(sr_unit, hr_unit)),
            "mse": batch_mse(sr_unit, hr_unit), "ssim": batch_ssim(sr_unit, hr_unit),
            "psnr": batch_psnr(sr_unit, hr_unit, scale), "psnr_y": batch_psnr_y(sr_unit, hr_unit, scale),
            "ssim_y": batch_ssim_y(sr_unit, hr_unit, scale)}
