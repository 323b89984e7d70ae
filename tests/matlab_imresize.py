"""MATLAB's `imresize(A, scale)` (default bicubic) on uint8 images: a test oracle written from MATLAB's algorithm.

Independent of pipeline.data.kernels (which goes through resize-right): the steps of MATLAB's
imresize.m, 1-based as there.

- `contributions`: output pixel x (1..out) sits at u = x / scale + 0.5 (1 - 1 / scale) in input
  coordinates; it reads P = ceil(width) + 2 input pixels from floor(u - width / 2), weighted by the
  cubic kernel (a = -0.5, width 4), widened to width 4 / scale and scaled by `scale` when shrinking
  (antialiasing); weights normalised to sum 1; indices outside the image mirrored with the edge
  pixel repeated ([1..n, n..1]).
- `imresize`: one dimension at a time, the smaller scale factor first (rows first on a tie), the
  result of each rounded half away from zero and saturated to uint8, MATLAB's arithmetic on uint8.

How far it is from MATLAB itself (measured on files MATLAB made; they are not vendored):
- jbhuang0604/SelfExSR (commit 18e00f2), data/Set5 and data/Set14 image_SRF_4, the LR images of
  the HR images: `imresize(hr, 1/4)` here equals them pixel for pixel away from a 3-pixel border
  (19 images; 2-3% of the border pixels differ: those files' border handling is not imresize's);
- spnova12/SR_bicubic_test-matlab-vs-cv2 (commit a57ef7b), SR_testing_datasets_matlab/Set5, made
  by `imresize(imresize(single(hr) / 255, 1/4), 4)`: the same contributions without the uint8
  rounding give them to within 1 grey level (MATLAB's single precision), 2 of the 5 exactly.
"""

from __future__ import annotations

import math

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic with a = -0.5, MATLAB's bicubic kernel."""
    x = np.abs(x)
    return ((1.5 * x**3 - 2.5 * x**2 + 1) * (x <= 1)
            + (-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2) * ((x > 1) & (x <= 2)))


def contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(weights, 0-based input indices), each out_length x P, of one dimension."""
    width = 4.0 / scale if scale < 1 else 4.0
    kernel = (lambda t: scale * cubic(scale * t)) if scale < 1 else cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    indices = mirror[np.mod(indices - 1, len(mirror)).astype(int)] - 1
    return weights, indices


def resize_dimension(image: np.ndarray, dim: int, scale: float) -> np.ndarray:
    """One dimension of a uint8-valued image resized by `scale` (MATLAB's output length ceil(scale n)), as uint8."""
    out_length = math.ceil(scale * image.shape[dim])
    weights, indices = contributions(image.shape[dim], out_length, scale)
    moved = np.moveaxis(image.astype(np.float64), dim, 0)
    out = np.einsum("op,op...->o...", weights, moved[indices])
    return np.clip(np.floor(np.moveaxis(out, 0, dim) + 0.5), 0, 255).astype(np.uint8)


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB's imresize(image, scale) of a uint8 HxW or HxWxC image (same scale on both sides: rows first)."""
    return resize_dimension(resize_dimension(image, 0, scale), 1, scale)
