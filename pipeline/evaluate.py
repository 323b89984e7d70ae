"""Evaluate every strategy on a dataset's test crops: SR images, per-image metrics, means.

For each batch of test pairs, the HR references' perceptual features are computed once and
shared by every strategy; each strategy super-resolves the batch on the device (CUDA when
present). Metrics are computed on the SR images as saved (quantized to 8 bits), so they can
be recomputed from the PNGs. Outputs, each written atomically:

- results/<ds>/sr/<slug>/<id>.png: the SR images (each strategy's folder replaced as a whole);
- results/<ds>/per_image.csv: one row per (image, strategy), empty cells for n/a;
- metrics/<ds>.json: per-strategy means and standard deviations, the perceptual nets' status
  (source and sha256 of their weights, or why they are n/a) and the paper's selection rule.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import metrics, paths, perceptual, strategies
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_json, atomic_write_text
from pipeline.imageset import from_unit, load_pairs, to_unit
from pipeline.train import choose_device
from pipeline.weights import DEFAULT_ORDER

log = logging.getLogger(__name__)

# Paper-compared columns first (the paper's scale, see pipeline.metrics), then our extra columns.
LOW_LEVEL = ("l2", "ssim_error", "mse", "ssim", "psnr", "psnr_y", "ssim_y")
COLUMNS = ("id", "strategy") + LOW_LEVEL + perceptual.ALL_COLUMNS
SELECTION_RULE = "best method minimises the maximum PE across the available networks (GCN paper 4.2)"
BASELINE = "bicubic"


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: cannot encode PNG")
    path.write_bytes(data.tobytes())


def load_models(params: dict, dataset: str, root: Path, scale: int) -> dict[str, torch.nn.Module]:
    """The SR model of every selected strategy (bicubic always included as the baseline)."""
    from pipeline.models import Bicubic, load_sr_model
    names = strategies.select(params["strategy"])
    if BASELINE not in names:
        names = [BASELINE] + names
    models = {}
    for name in names:
        folder = root / paths.models_dir(dataset) / strategies.slug(name)
        if name == BASELINE and not (folder / "config.json").is_file():
            models[name] = Bicubic(scale).eval()        # untrained: nothing to load
            continue
        if not (folder / "config.json").is_file():
            raise UserError(f"{folder}: strategy {name!r} has no trained model for dataset {dataset!r}; "
                            f"run the train stage first (dvc repro train@{dataset})")
        models[name] = load_sr_model(folder)
    return models


def selection(means: dict[str, dict], used: list[str]) -> dict:
    """The paper's rule: the winner minimises, over the strategies, the maximum PE over networks."""
    max_pe = {name: max(row[c] for c in used) for name, row in means.items()} if used else {}
    winner = min(max_pe, key=max_pe.get) if max_pe else None
    return {"rule": SELECTION_RULE, "winner": winner, "max_pe": max_pe, "networks_used": list(used)}


@torch.no_grad()
def score_batch(models: dict[str, torch.nn.Module], nets: dict[str, perceptual.PerceptualNet],
                lr_u8: torch.Tensor, hr_u8: torch.Tensor, scale: int, device: torch.device
                ) -> dict[str, tuple[np.ndarray, list[dict]]]:
    """Super-resolve one batch with every model and score it: {strategy: (SR uint8 NxHxWx3, metric rows)}.

    The HR features of each perceptual net are computed once for all strategies; the SR images
    are scored as saved (8-bit). Rows hold every value column, None for an n/a network.
    """
    lr_unit = to_unit(lr_u8).to(device)
    hr_np = hr_u8.permute(0, 2, 3, 1).numpy()
    hr_unit = to_unit(hr_u8).to(device)
    hr_feats = {net: model.features(hr_unit) for net, model in nets.items()}
    results = {}
    for name, model in models.items():
        sr_u8 = from_unit(model(lr_unit).float().cpu())
        sr_np = sr_u8.permute(0, 2, 3, 1).numpy()
        sr_unit = to_unit(sr_u8).to(device)
        pe = {}
        for net, pnet in nets.items():
            raw, calibrated = pnet.distances(pnet.features(sr_unit), hr_feats[net])
            raw_col, lin_col = perceptual.columns(net)
            pe[raw_col], pe[lin_col] = raw.cpu().tolist(), calibrated.cpu().tolist()
        rows = []
        for i in range(len(sr_np)):
            row = metrics.image_metrics(sr_np[i], hr_np[i], scale)
            row.update({col: pe[col][i] if col in pe else None for col in perceptual.ALL_COLUMNS})
            rows.append(row)
        results[name] = (sr_np, rows)
    return results


@torch.no_grad()
def evaluate_dataset(params: dict, dataset: str, root: Path = Path(".")) -> dict:
    """Evaluate the selected strategies (and bicubic) on `dataset`'s test split; returns the metrics dict."""
    root = Path(root)
    started = time.perf_counter()
    lr, hr, ids = load_pairs(dataset, "test", root)
    scale = hr.shape[-1] // lr.shape[-1]
    device = choose_device(params["train"].get("device", "auto"))
    models = {name: m.to(device) for name, m in load_models(params, dataset, root, scale).items()}
    order = params["eval"].get("weights_order", DEFAULT_ORDER)
    nets, status = perceptual.load_networks(params["eval"]["networks"], order, root, device)
    for net, state in status.items():
        if not state["available"]:
            log.warning("perceptual net %s is n/a: %s", net, state["reason"])

    sr_root = root / paths.results_dir(dataset) / "sr"
    sr_root.mkdir(parents=True, exist_ok=True)
    staging = {name: Path(tempfile.mkdtemp(dir=sr_root, prefix=f".{strategies.slug(name)}.")) for name in models}
    rows: list[dict] = []
    batch_size = int(params["eval"]["batch_size"])
    try:
        for start in tqdm(range(0, len(ids), batch_size), desc=f"evaluate {dataset}", unit="batch"):
            stop = min(start + batch_size, len(ids))
            results = score_batch(models, nets, lr[start:stop], hr[start:stop], scale, device)
            for name, (sr_np, scores) in results.items():
                for i, image_id in enumerate(ids[start:stop]):
                    _write_png(staging[name] / f"{image_id}.png", sr_np[i])
                    rows.append({"id": image_id, "strategy": name, **scores[i]})
        for name, folder in staging.items():
            final = sr_root / strategies.slug(name)
            if final.exists():
                shutil.rmtree(final)
            os.chmod(folder, 0o755)
            os.replace(folder, final)
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    csv_path = root / paths.results_dir(dataset) / "per_image.csv"
    atomic_write_text(csv_path, table.to_csv(index=False, na_rep=""))

    value_columns = LOW_LEVEL + perceptual.ALL_COLUMNS
    means, stds = {}, {}
    for name in models:
        part = [r for r in rows if r["strategy"] == name]
        means[name], stds[name] = {}, {}
        for col in value_columns:
            means[name][col], stds[name][col] = metrics.aggregate([r[col] for r in part], col)
    used = [c for net in params["eval"]["networks"] if net in nets for c in perceptual.columns(net)]
    result = {
        "dataset": dataset,
        "n_test": len(ids),
        "scale": scale,
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "strategies": means,
        "std": stds,
        "networks": status,
        "selection": selection(means, used),
        "conventions": {
            "l2": "the paper's L2: mean squared error of RGB in [-1,1] (= 4 x mse), whole image, as Zhang et al.'s "
                  "DistModel('L2', colorspace='RGB') (evidence: bench/metric-convention.md)",
            "ssim_error": "the paper's SSIM column: DSSIM = (1 - SSIM) / 2 with scikit-image's default SSIM "
                          "(7x7 uniform window, sample covariance), RGB mean, whole image, as Zhang et al.'s dssim",
            "mse": "mean squared error, RGB in [0,1], whole image (not in the paper)",
            "ssim": "SSIM of Wang et al.: Gaussian window sigma 1.5 (11x11), population covariance, RGB mean, whole image (not in the paper)",
            "psnr": f"RGB in [0,1], {scale}-pixel border shaved; means cap per-image PSNR at {metrics.PSNR_CAP:g} dB",
            "psnr_y": f"MATLAB rgb2ycbcr luma (BT.601, Y in [16,235], unrounded), peak 255, {scale}-pixel border shaved (BasicSR test_y_channel)",
            "ssim_y": f"SSIM of the same luma, Gaussian 11x11 sigma 1.5, data range 255, {scale}-pixel border shaved (BasicSR test_y_channel)",
            "pe": "pe_<net>_lin: LPIPS v0.1 calibrated; pe_<net>: LPIPS(lpips=False)/2 = sum over layers of the spatial mean of 1 - cos (uncalibrated, as the paper)",
        },
    }
    atomic_write_json(root / paths.metrics_path(dataset), _finite(result))
    return result


def _finite(value):
    """JSON has no inf/NaN: such values become null (means are already finite by construction)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
