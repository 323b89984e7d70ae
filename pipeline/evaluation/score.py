"""Score a folder of SR images against HR references with the report's metrics, image by image.

Files are paired by stem: `img.png` in the SR folder with `img.<any>` in the HR folder, or, for
the outputs of `gcn-bench upscale`, `img_x4_<slug>.png` with `img.<any>`. Every low-level metric
of `pipeline.evaluation.metrics.batch_metrics` is computed on the device (whatever columns it returns, those of
`image_metrics`; the evaluate stage's code, so both give the same values), and the perceptual
error of each requested network whose ImageNet weights can be obtained (`pipeline.evaluation.perceptual`);
the others are n/a, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.data.imageset import to_unit
from pipeline.errors import UserError
from pipeline.evaluation import metrics, perceptual
from pipeline.nets.upscale import UPSCALED, list_images, read_image


def pair_files(sr_dir: Path, hr_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(SR, HR) file pairs matched by stem, and the SR files without a reference."""
    references: dict[str, Path] = {}
    for path in list_images([hr_dir]):
        if path.stem in references:
            raise UserError(f"{hr_dir}: two references named {path.stem!r} ({references[path.stem].name}, {path.name})")
        references[path.stem] = path
    pairs, unpaired = [], []
    for path in list_images([sr_dir]):
        key = path.stem if path.stem in references else UPSCALED.sub("", path.stem)
        if key in references:
            pairs.append((path, references[key]))
        else:
            unpaired.append(path)
    if not pairs:
        raise UserError(f"{sr_dir}: no image has a reference of the same name in {hr_dir}")
    return pairs, unpaired


def match_size(sr: np.ndarray, hr: np.ndarray, scale: int, name: str) -> tuple[np.ndarray, bool]:
    """The HR image at the SR image's size: cropped (bottom/right) when it is larger by less than
    `scale` pixels (an HR side that is not a multiple of the scale, the SR literature's "modcrop");
    any other difference is an error."""
    if sr.shape == hr.shape:
        return hr, False
    dh, dw = hr.shape[0] - sr.shape[0], hr.shape[1] - sr.shape[1]
    if 0 <= dh < scale and 0 <= dw < scale:
        return hr[:sr.shape[0], :sr.shape[1]], True
    raise UserError(f"{name}: SR image is {sr.shape[1]}x{sr.shape[0]} but its reference is "
                    f"{hr.shape[1]}x{hr.shape[0]}; they must have the same size (up to a multiple of --scale {scale})")


def check_pairs(pairs: list[tuple[Path, Path]], scale: int) -> int:
    """Decode every pair and check its sizes before any work starts; how many references will be cropped."""
    return sum(match_size(read_image(sr), read_image(hr), scale, sr.name)[1] for sr, hr in pairs)


def score_pairs(pairs: list[tuple[Path, Path]], scale: int, nets: dict[str, perceptual.PerceptualNet],
                requested: list[str], device: torch.device, progress=None) -> pd.DataFrame:
    """One row per pair: image, reference, metric columns, PE columns of `requested` nets (None when n/a)."""
    rows = []
    for sr_path, hr_path in pairs:
        sr = read_image(sr_path)
        hr, _ = match_size(sr, read_image(hr_path), scale, sr_path.name)
        images = [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None] for a in (sr, hr)]
        try:    # the evaluate stage's code path, so both score the same image alike
            batch = metrics.batch_metrics(images[0].to(device), images[1].to(device), scale)
            values = {col: float(v[0]) for col, v in batch.items()}
        except ValueError as err:   # too small for the SSIM window or the border shave
            raise UserError(f"{sr_path.name}: {sr.shape[1]}x{sr.shape[0]} is too small to score ({err})") from None
        row = {"image": sr_path.name, "reference": hr_path.name, **values}
        tensors = [to_unit(t).to(device) for t in images]
        for net in requested:
            raw_col, lin_col = perceptual.columns(net)
            if net in nets:
                raw, calibrated = nets[net](*tensors)
                row[raw_col], row[lin_col] = float(raw[0]), float(calibrated[0])
            else:
                row[raw_col] = row[lin_col] = None
        rows.append(row)
        if progress is not None:
            progress.update(1)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of every value column (PSNR capped as in the report; None if n/a)."""
    values = [c for c in table.columns if c not in ("image", "reference")]
    stats = {}
    for col in values:
        column = [None if pd.isna(v) else float(v) for v in table[col]]
        stats[col] = metrics.aggregate(column, col)
    return pd.DataFrame({"mean": {c: m for c, (m, _) in stats.items()},
                         "std": {c: s for c, (_, s) in stats.items()}})
