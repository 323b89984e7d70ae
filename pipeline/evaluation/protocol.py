"""The standard SR protocol: a dataset's trained models scored on whole images of test-only sets (Set5, ...).

SRGAN (Ledig et al. 2017, 3.1), the DP paper (4.2), BasicSR and mmagic score a model on whole
benchmark images: the HR image cropped to a multiple of the scale ("modcrop"), the LR image made
from it, PSNR and SSIM on the luma with `scale` pixels shaved from every border, plus LPIPS. Here
every trained model of a dataset (each selected strategy and seed, models/<D>/<slug>/seed-<k>/, and
bicubic) is scored on each given set:

- the LR image is made from the modcropped HR image with the kernel the models were trained with
  (`crop.downscale`: configs/srgan.yaml uses MATLAB's bicubic, the SR literature's);
- the bicubic baseline always upscales with MATLAB's imresize (pipeline.data.kernels), whatever the
  profile: its row sits beside the published bicubic rows, which are MATLAB's;
- a greyscale image (a one-channel file, such as Set14's bridge) is scored on its grey values, as
  the published MATLAB scripts score it (`if size(im, 3) == 1`): PSNR-Y and SSIM-Y on the
  full-range luma (metrics.grey_values), not on a Y channel squeezed into [16, 235];
- each image runs alone through pipeline.nets.upscale.super_resolve (tiled, exact), so sizes may differ
  and memory stays bounded;
- columns: every low-level metric of pipeline.evaluation.metrics (psnr_y and ssim_y are BasicSR's; l2 and
  ssim_error the GCN paper's L2 and DSSIM) and the six LPIPS columns of pipeline.evaluation.perceptual;
- per set and strategy: the mean over seeds and images with its 95% interval and seed sd
  (pipeline.evaluation.stats).

The sets come from the download stage (data/raw/<set>/SOURCE.json); pipeline.evaluation.benchmark writes the
stage's files, and the report puts the published numbers beside ours (pipeline.reporting.published).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import paths
from pipeline.config import dataset_spec
from pipeline.data.crop import downscale
from pipeline.data.imageset import to_unit
from pipeline.data.kernels import BICUBIC_KERNELS, MATLAB
from pipeline.data.sources import SOURCE_FILE, read_record
from pipeline.device import choose_device
from pipeline.errors import UserError
from pipeline.evaluation import metrics, perceptual, stats
from pipeline.evaluation.evaluate import VALUE_COLUMNS, load_models
from pipeline.nets.upscale import read_image_converted, super_resolve
from pipeline.nets.weights import DEFAULT_ORDER
from pipeline.reporting import tables

log = logging.getLogger(__name__)

COLUMNS = paths.BENCHMARK_KEYS + VALUE_COLUMNS       # one row per set, image, strategy and seed


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """The image cropped at its bottom and right to sides that are multiples of `scale` (BasicSR's mod_crop)."""
    height, width = image.shape[0] - image.shape[0] % scale, image.shape[1] - image.shape[1] % scale
    return image[:height, :width]


def read_set(params: dict, name: str, root: Path = Path(".")) -> list[tuple[str, np.ndarray, bool]]:
    """(id, RGB uint8 HR image, greyscale file?) of every image of a downloaded test-only set, in SOURCE.json's order.

    A set that was never downloaded is the user's to fix: one line naming the download stage and
    the folder where its images can be put by hand.
    """
    raw = root / paths.raw_dir(name)
    if not (raw / SOURCE_FILE).is_file():
        folder = dataset_spec(params, name)["source"].get("user_folder")
        hand = f"; offline, put its images in {(root / folder).resolve()}" if folder else ""
        raise UserError(f"test-only set {name!r} is not downloaded ({raw / SOURCE_FILE} missing): run "
                        f"`dvc repro download_benchmark@{name}` or `python stages/download.py --dataset {name}`{hand}")
    record, files = read_record(raw)
    ids = [Path(entry["path"]).with_suffix("").as_posix() for entry in record["files"]]
    images = [(image_id, read_image_converted(path)) for image_id, path in zip(ids, files)]
    return [(image_id, rgb, "greyscale" in conversions) for image_id, (rgb, conversions) in images]


@torch.no_grad()
def score_image(models: dict, nets: dict[str, perceptual.PerceptualNet], hr: np.ndarray, scale: int, method: str,
                device: torch.device, grey: bool = False) -> dict[tuple[str, int], dict]:
    """Every model's metric row on one whole image: {(strategy, seed): {column: value}}, None for an n/a network.

    `grey`: the image is greyscale; PSNR-Y and SSIM-Y are taken on its grey values.
    """
    hr = modcrop(hr, scale)
    lr = downscale(hr, scale, method)
    hr_unit = to_unit(torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1)[None]).to(device)
    hr_feats = {net: pnet.features(hr_unit) for net, pnet in nets.items()}
    rows = {}
    for key, model in models.items():
        sr = super_resolve(model, lr, scale, device)
        row = metrics.image_metrics(sr, hr, scale, grey=grey)
        sr_unit = to_unit(torch.from_numpy(sr).permute(2, 0, 1)[None]).to(device)
        for net in perceptual.NETS:
            raw_col, lin_col = perceptual.columns(net)
            if net in nets:
                raw, calibrated = nets[net].distances(nets[net].features(sr_unit), hr_feats[net])
                row[raw_col], row[lin_col] = float(raw[0]), float(calibrated[0])
            else:
                row[raw_col] = row[lin_col] = None
        rows[key] = row
    return rows


def set_summary(table: pd.DataFrame, name: str) -> dict:
    """One set's means over seeds and images and their intervals: {n_images, strategies, stats}."""
    names = list(dict.fromkeys(table["strategy"]))
    frame = tables.per_image_frame(table.drop(columns="benchmark"), name)
    means, spread = {}, {}
    for strategy in names:
        part = table[table["strategy"] == strategy]
        means[strategy] = {col: metrics.aggregate([None if pd.isna(v) else float(v) for v in part[col]], col)[0]
                           for col in VALUE_COLUMNS}
        spread[strategy] = {}
    for col in VALUE_COLUMNS:
        for strategy, values in tables.column_arrays(frame, name, col, names).items():
            cell = stats.cell_stats(values)
            spread[strategy][col] = {"ci_low": cell["ci_low"], "ci_high": cell["ci_high"],
                                     "seed_sd": None if math.isnan(cell["seed_sd"]) else cell["seed_sd"]}
    return {"n_images": int(table["id"].nunique()), "strategies": means, "stats": spread}


def score_sets(params: dict, dataset: str, sets: list[str], root: Path = Path(".")) -> tuple[pd.DataFrame, dict]:
    """Score every trained model of `dataset` on each set: (per-image table with COLUMNS, summary record)."""
    root = Path(root)
    images = {name: read_set(params, name, root) for name in sets}   # every set present before any model runs
    scale, method = int(params["crop"]["scale"]), params["crop"].get("downscale", "bicubic")
    device = choose_device(params["train"].get("device", "auto"))
    models = {key: model.to(device) for key, model in load_models(params, dataset, root, scale, MATLAB).items()}
    order = params["eval"].get("weights_order", DEFAULT_ORDER)
    nets, status = perceptual.load_networks(params["eval"]["networks"], order, root, device)
    for net, state in status.items():
        if not state["available"]:
            log.warning("perceptual net %s is n/a: %s", net, state["reason"])
    rows = []
    for name, pairs in images.items():
        for image_id, hr, grey in tqdm(pairs, desc=f"{dataset} on {name}", unit="image", disable=None):
            for (strategy, seed), row in score_image(models, nets, hr, scale, method, device, grey).items():
                rows.append({"benchmark": name, "id": image_id, "strategy": strategy, "seed": seed, **row})
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    record = {
        "scale": scale,
        "downscale": method,
        "bicubic_kernel": MATLAB,
        "device": str(device),
        "seeds": sorted({seed for _, seed in models}),
        "benchmarks": {name: {**set_summary(table[table["benchmark"] == name], name),
                              "grey_images": [image_id for image_id, _, grey in images[name] if grey]}
                       for name in sets},
        "networks": status,
        "protocol": (f"whole images: HR cropped to a multiple of {scale} (modcrop), LR made from it by {method}; "
                     f"bicubic upscaled by {BICUBIC_KERNELS[MATLAB]}; "
                     f"psnr_y / ssim_y on the BT.601 luma with {scale} pixels shaved (BasicSR test_y_channel), "
                     f"on the grey values for a greyscale image; "
                     f"l2, ssim_error (DSSIM), mse, ssim, psnr and LPIPS (pe_*) as in metrics/{dataset}.json"),
    }
    return table, record
