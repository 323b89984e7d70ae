"""Super-resolve images of any size with a trained model, tile by tile so memory stays bounded.

A tile of `tile` x `tile` LR pixels is run through the model with `overlap` extra LR pixels of
context on every side (clipped at the image border) and only its centre is kept. The generator
is fully convolutional (BatchNorm in eval mode is a per-pixel affine map), so an output pixel
depends only on the LR pixels within its receptive field: when `overlap` covers that field
(its radius is `receptive_radius`), the tiled result equals the untiled one up to
floating-point summation order, borders included.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
from torch import nn

from pipeline.crop import BadImage, to_bgr8
from pipeline.errors import UserError
from pipeline.imageset import from_unit, to_unit

UPSCALED = re.compile(r"_x\d+_[^_]+$")   # the stem suffix of our outputs: <name>_x<scale>_<strategy slug>
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_TILE = 256      # LR pixels: a x4 tile of the 64-wide SRResNet peaks at about 0.3 GB


def receptive_radius(model: nn.Module) -> int:
    """How far (in LR pixels, rounded up) an output pixel sees: the overlap that makes tiling exact.

    Each convolution of kernel k at a resolution r times the LR one adds (k // 2) / r LR pixels;
    upsampling layers double r. Bicubic interpolation reads 2 LR pixels on each side.
    """
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return 2
    radius, resolution = 0.0, 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            radius += (module.kernel_size[0] // 2) * module.dilation[0] / resolution
        elif isinstance(module, nn.PixelShuffle):
            resolution *= module.upscale_factor
        elif isinstance(module, nn.Upsample):
            resolution *= int(module.scale_factor)
    return math.ceil(radius)


def read_image(path: Path) -> np.ndarray:
    """Any image OpenCV decodes (8/16-bit, greyscale, RGBA, float) as RGB uint8 HxWx3."""
    return read_image_converted(path)[0]


def read_image_converted(path: Path) -> tuple[np.ndarray, list[str]]:
    """`read_image` and the conversions it applied (crop.to_bgr8's names: "greyscale" for a one-channel file)."""
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise UserError(f"{path}: cannot read this file as an image")
    try:
        bgr, conversions = to_bgr8(image)
    except BadImage:
        raise UserError(f"{path}: unsupported pixel format {image.dtype} with shape {image.shape}") from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), conversions


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 image."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError("cannot encode the result as PNG")
    return data.tobytes()


def list_images(inputs: list[Path], skip_upscaled: bool = False) -> list[Path]:
    """The image files named by `inputs` (files, or folders read one level deep, sorted).

    With `skip_upscaled`, files in a folder named like our outputs (`UPSCALED`) are skipped, so
    upscaling a folder twice does not upscale earlier results. A missing path is an error.
    """
    files = []
    for path in inputs:
        path = Path(path)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                           and not (skip_upscaled and UPSCALED.search(p.stem)))
            if not found:
                raise UserError(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    return files


def tiles(height: int, width: int, tile: int) -> Iterator[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) LR boxes covering the image; one box when `tile` <= 0."""
    if tile <= 0:
        yield 0, height, 0, width
        return
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            yield y0, min(y0 + tile, height), x0, min(x0 + tile, width)


def count_tiles(height: int, width: int, tile: int) -> int:
    return 1 if tile <= 0 else math.ceil(height / tile) * math.ceil(width / tile)


@torch.no_grad()
def super_resolve(model: nn.Module, image: np.ndarray, scale: int, device: torch.device | str = "cpu",
                  tile: int = DEFAULT_TILE, overlap: int | None = None, progress=None) -> np.ndarray:
    """The SR image (RGB uint8, `scale` times larger) of an RGB uint8 image, computed tile by tile.

    `overlap` defaults to the model's receptive radius (exact tiling); `progress` (a tqdm bar or
    None) is advanced once per tile.
    """
    if overlap is None:
        overlap = receptive_radius(model)
    height, width = image.shape[:2]
    lr = to_unit(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None])
    out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
    for y0, y1, x0, x1 in tiles(height, width, tile):
        # the tile plus `overlap` pixels of context, clipped to the image
        py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
        py1, px1 = min(y1 + overlap, height), min(x1 + overlap, width)
        sr = model(lr[:, :, py0:py1, px0:px1].to(device)).float()
        top, left = (y0 - py0) * scale, (x0 - px0) * scale
        sr = sr[:, :, top:top + (y1 - y0) * scale, left:left + (x1 - x0) * scale]
        out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = from_unit(sr.cpu())[0].permute(1, 2, 0).numpy()
        if progress is not None:
            progress.update(1)
    return out
