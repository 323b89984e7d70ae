"""Read the cropped HR/LR pairs of one dataset split (written by pipeline.data.crop) as tensors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline import paths
from pipeline.errors import UserError

MANIFEST_COLUMNS = ("id", "split", "source", "x", "y", "size", "hr", "lr")


def read_manifest(dataset: str, root: Path = Path(".")) -> pd.DataFrame:
    """The crop manifest of a dataset: one row per crop (id, split, source, box, hr/lr paths)."""
    path = root / paths.manifest_path(dataset)
    if not path.is_file():
        raise UserError(f"{path}: no crops for dataset {dataset!r}; run the crop stage first (dvc repro crop@{dataset})")
    return pd.read_csv(path, dtype={"id": str})


def read_png(path: Path) -> np.ndarray:
    """An RGB uint8 HxWx3 array from a PNG written by the crop stage."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_pairs(dataset: str, split: str, root: Path = Path(".")) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All (LR, HR) crops of a split as uint8 tensors (N,3,h,w) and (N,3,H,W), plus their ids."""
    manifest = read_manifest(dataset, root)
    rows = manifest[manifest["split"] == split].sort_values("id")
    if rows.empty:
        raise UserError(f"dataset {dataset!r} has no {split} crops; check data.{dataset}.crop in params.yaml")
    base = root / paths.crops_dir(dataset)
    lr = np.stack([read_png(base / p) for p in rows["lr"]])
    hr = np.stack([read_png(base / p) for p in rows["hr"]])
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    return to_tensor(lr), to_tensor(hr), list(rows["id"])


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0,255] -> float [-1,1], the range of the paper's generator (tanh output)."""
    return images.float().div(127.5).sub(1.0)


def from_unit(images: torch.Tensor) -> torch.Tensor:
    """float [-1,1] -> uint8 [0,255], rounding to the nearest level."""
    return images.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
