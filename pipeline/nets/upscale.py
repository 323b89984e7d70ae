"""Super-resolve images of any size with a trained model, tile by tile so memory stays bounded.

A tile of `tile` x `tile` LR pixels is run through the model with `overlap` extra LR pixels of
context on every side (clipped at the image border) and only its centre is kept. The generator
is fully convolutional (BatchNorm in eval mode is a per-pixel affine map), so an output pixel
depends only on the LR pixels within its receptive field: when `overlap` covers that field
(its radius is `receptive_radius`), the tiled result equals the untiled one up to
floating-point summation order, borders included.

`sr_bands` yields the result one row of tiles at a time and `write_png` streams those rows into the
PNG file, so upscaling holds the input (uint8), one band of output rows and one tile's activations:
memory grows with the tile and the image width, not with the image height (docs/upscale.md).
"""

from __future__ import annotations

import math
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from pipeline.data.crop import BadImage, to_bgr8
from pipeline.data.imageset import from_unit, to_unit
from pipeline.errors import UserError

UPSCALED = re.compile(r"_x\d+_[^_]+$")   # the stem suffix of our outputs: <name>_x<scale>_<strategy slug>
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_TILE = 256      # LR pixels: a x4 tile of the 64-wide SRResNet takes about 0.76 GB (docs/upscale.md)
# The most pixels an input may have: OpenCV's decoding limit (its default, 2^30, unless the user sets it)
MAX_PIXELS = int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", 1 << 30))
PNG_COMPRESSION = 1     # zlib level of the written PNGs: OpenCV's default, fast on large images
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_FILTER_UP = 2       # PNG filter type 2: each row stored as its difference from the row above


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


def declared_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the file's header declares them, read without decoding the pixels (Pillow);
    None for a file Pillow cannot identify (OpenCV may still read it)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None   # only the header is read here; the size limit is MAX_PIXELS
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: Path) -> np.ndarray:
    """Any image OpenCV decodes (8/16-bit, greyscale, RGBA, float) as RGB uint8 HxWx3."""
    return read_image_converted(path)[0]


def read_image_converted(path: Path) -> tuple[np.ndarray, list[str]]:
    """`read_image` and the conversions it applied (crop.to_bgr8's names: "greyscale" for a one-channel file).

    A file whose header declares more than MAX_PIXELS pixels is refused before it is decoded.
    """
    size = declared_size(path)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise UserError(f"{path}: the file declares {size[0]}x{size[1]} pixels, more than the limit of "
                        f"{MAX_PIXELS:,} pixels (OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS)")
    try:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(err):
            raise UserError(f"{path}: the image has more than the limit of {MAX_PIXELS:,} pixels "
                            f"(OpenCV's OPENCV_IO_MAX_IMAGE_PIXELS)") from None
        image = None
    if image is None or image.size == 0:
        raise UserError(f"{path}: cannot read this file as an image")
    try:
        bgr, conversions = to_bgr8(image)
    except BadImage:
        raise UserError(f"{path}: unsupported pixel format {image.dtype} with shape {image.shape}") from None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), conversions


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type and data (PNG specification, 5.3)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(handle, width: int, height: int, bands: Iterable[np.ndarray]) -> None:
    """An 8-bit RGB PNG of `height` rows written to a binary file from bands of rows (h x width x 3 uint8).

    Each band is filtered and compressed as it comes, so one band is in memory at a time. OpenCV and
    Pillow encode whole images only, and pypng, which streams rows, stores them unfiltered (files
    1.7-1.9 times OpenCV's); the Up filter keeps the files the size of OpenCV's (docs/upscale.md).
    """
    handle.write(PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
    compressor = zlib.compressobj(PNG_COMPRESSION)
    previous = np.zeros(width * 3, dtype=np.uint8)   # the row above the first one counts as zeros
    written = 0
    for band in bands:
        rows = np.ascontiguousarray(band, dtype=np.uint8).reshape(len(band), width * 3)
        filtered = np.empty((len(rows), width * 3 + 1), dtype=np.uint8)
        filtered[:, 0] = PNG_FILTER_UP
        # uint8 subtraction wraps modulo 256, as the filter is defined
        np.subtract(rows, np.vstack([previous[None], rows[:-1]]), out=filtered[:, 1:])
        previous, written = rows[-1].copy(), written + len(rows)
        data = compressor.compress(filtered.tobytes())
        if data:
            handle.write(png_chunk(b"IDAT", data))
    if written != height:
        raise ValueError(f"write_png: {written} rows given for a {height}-row image")
    handle.write(png_chunk(b"IDAT", compressor.flush()) + png_chunk(b"IEND", b""))


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


def spans(length: int, tile: int) -> list[tuple[int, int]]:
    """(start, end) intervals of at most `tile` covering [0, length); one interval when `tile` <= 0."""
    if tile <= 0:
        return [(0, length)]
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def count_tiles(height: int, width: int, tile: int) -> int:
    return 1 if tile <= 0 else math.ceil(height / tile) * math.ceil(width / tile)


@torch.no_grad()
def sr_bands(model: nn.Module, image: np.ndarray, scale: int, device: torch.device | str = "cpu",
             tile: int = DEFAULT_TILE, overlap: int | None = None, progress=None) -> Iterator[np.ndarray]:
    """The SR image (RGB uint8, `scale` times larger) of an RGB uint8 image, one band of rows per row of tiles.

    Each tile is converted to [-1,1] on its own (no float copy of the whole input). `overlap`
    defaults to the model's receptive radius (exact tiling); `progress` (a tqdm bar or None) is
    advanced once per tile.
    """
    if overlap is None:
        overlap = receptive_radius(model)
    height, width = image.shape[:2]
    for y0, y1 in spans(height, tile):
        band = np.empty(((y1 - y0) * scale, width * scale, 3), dtype=np.uint8)
        for x0, x1 in spans(width, tile):
            # the tile plus `overlap` pixels of context, clipped to the image
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, height), min(x1 + overlap, width)
            lr = to_unit(torch.from_numpy(np.ascontiguousarray(image[py0:py1, px0:px1])).permute(2, 0, 1)[None])
            sr = model(lr.to(device)).float()
            top, left = (y0 - py0) * scale, (x0 - px0) * scale
            sr = sr[:, :, top:top + (y1 - y0) * scale, left:left + (x1 - x0) * scale]
            band[:, x0 * scale:x1 * scale] = from_unit(sr.cpu())[0].permute(1, 2, 0).numpy()
            if progress is not None:
                progress.update(1)
        yield band


def super_resolve(model: nn.Module, image: np.ndarray, scale: int, device: torch.device | str = "cpu",
                  tile: int = DEFAULT_TILE, overlap: int | None = None, progress=None) -> np.ndarray:
    """The whole SR image (RGB uint8, `scale` times larger) of an RGB uint8 image, in memory (`sr_bands`)."""
    height, width = image.shape[:2]
    out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
    row = 0
    for band in sr_bands(model, image, scale, device, tile, overlap, progress):
        out[row:row + len(band)] = band
        row += len(band)
    return out
