"""Resampling kernels: MATLAB's bicubic `imresize`, and which bicubic the untrained baseline upscales with.

Two bicubic conventions meet in this benchmark:

- OpenCV's (`cv2.resize(..., INTER_CUBIC)`, also PyTorch's `F.interpolate(mode="bicubic")`): cubic
  coefficient a = -0.75, half-pixel centres, edge pixels replicated, no antialiasing. The usual
  Keras/OpenCV pipelines, the GCN authors' among them, use it.
- MATLAB's (`imresize(im, s)`, the default 'bicubic'): a = -0.5, half-pixel centres, the image
  mirrored at its borders (edge pixel repeated), the kernel widened by 1/s when shrinking
  (antialiasing). Every published Set5/Set14/BSD100/Urban100 table makes its LR images, and its
  bicubic row, this way. Here it runs through resize-right, whose `cubic` is MATLAB's kernel.

The bicubic baseline upscales with the convention its LR images were made with (`bicubic_kernel`):
MATLAB's when `crop.downscale` is `matlab`, OpenCV's otherwise (OpenCV's bicubic, bilinear and area,
and torch's antialiased bicubic are all a = -0.75 pipelines). The standard SR protocol
(pipeline.evaluation.protocol) always uses MATLAB's: its bicubic row sits beside the published ones.
"""

from __future__ import annotations

import numpy as np

OPENCV, MATLAB = "opencv", "matlab"
BICUBIC_KERNELS = {
    OPENCV: "OpenCV / PyTorch bicubic (a = -0.75, edge pixels replicated)",
    MATLAB: "MATLAB imresize bicubic (a = -0.5, mirrored borders)",
}


def bicubic_kernel(downscale: str) -> str:
    """The upscaling kernel of the bicubic baseline when the LR images are made with `downscale` (crop.downscale)."""
    return MATLAB if downscale == "matlab" else OPENCV


def matlab_resize(array: np.ndarray, out_shape: tuple[int, ...], quantize: bool = False) -> np.ndarray:
    """`array` (any number of axes) resized to `out_shape` as MATLAB's imresize(..., 'bicubic') does, in float64.

    MATLAB resizes one dimension at a time, the most shrunk first (ties in axis order: rows before
    columns). `quantize` is MATLAB's arithmetic on a uint8 image: each dimension's result is
    rounded (half away from zero) and saturated to [0, 255] before the next one. That rounding
    matters: on Set5/Set14 at x4 it is what makes our LR images equal to MATLAB-made ones (one
    pixel in 2000 off by one, away from the borders, against one in ten without it).
    """
    from resize_right import interp_methods
    from resize_right import resize as resize_right

    out = np.asarray(array, dtype=np.float64)
    in_shape = out.shape
    dims = sorted((d for d in range(out.ndim) if out_shape[d] != in_shape[d]), key=lambda d: out_shape[d] / in_shape[d])
    for dim in dims:
        shape = list(out.shape)
        shape[dim] = out_shape[dim]
        # MATLAB mirrors the image at its borders; resize-right's default zero padding darkens them.
        out = resize_right(out, out_shape=tuple(shape), interp_method=interp_methods.cubic, antialiasing=True,
                           pad_mode="symmetric")
        if quantize:
            out = np.clip(np.floor(out + 0.5), 0, 255)
    return out
