"""Evaluate every strategy, every training seed, on a dataset's test crops: SR images, per-image metrics, stats.

Every selected strategy is evaluated once per training seed (`train.seeds`: the models
models/<ds>/<slug>/seed-<k>/); bicubic is deterministic and is evaluated once (its first seed
folder, else built here). For each batch of test pairs, the HR references' perceptual features
are computed once and shared by every model; each model super-resolves the batch on the device
(CUDA when present). Metrics are computed on the SR images as saved (quantized to 8 bits), so
they can be recomputed from the PNGs. Outputs, each written atomically:

- results/<ds>/sr/<slug>/<id>.png: the SR images of each strategy's first seed (the figures);
- results/<ds>/per_image.csv: one row per (image, strategy, seed), empty cells for n/a;
- metrics/<ds>.json: the dataset's record, numbers and short labels only: per-strategy means over seeds
  and images (``strategies``), their uncertainty (``stats``: 95% interval, seed sd, rank and tie with the
  column's best, pipeline.evaluation.stats), the paper's selection rule with how often each method wins on resamples,
  the column that decides each method's maximum and our scale-free variant of the rule (``selection``) and Kendall's tau against the paper (``rank_agreement``);
- metrics/<ds>-provenance.json: the same record's text (metric conventions, deviations from the paper,
  the perceptual nets' weight sources and n/a reasons, verdicts): pipeline.fileio.write_record splits
  them, read_record merges them back;
- metrics/<ds>/<strategy slug>.json: each method's headline numbers (`HEADLINE`), the dvc metrics of the
  stage: one row per dataset and method in `dvc metrics show`, narrow enough for a terminal.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Hashable, Mapping

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline import paths
from pipeline.config import seed_list
from pipeline.data import kernels
from pipeline.data.imageset import from_unit, load_pairs, to_unit
from pipeline.device import choose_device
from pipeline.errors import UserError
from pipeline.evaluation import metrics, perceptual, stats
from pipeline.fileio import atomic_write_json, atomic_write_text, staged, write_record
from pipeline.nets import strategies
from pipeline.nets.weights import DEFAULT_ORDER
from pipeline.reporting import deviations, tables

log = logging.getLogger(__name__)

# Paper-compared columns first (the paper's scale, see pipeline.evaluation.metrics), then our extra columns.
LOW_LEVEL = ("l2", "ssim_error", "mse", "ssim", "psnr", "psnr_y", "ssim_y")
VALUE_COLUMNS = LOW_LEVEL + perceptual.ALL_COLUMNS
COLUMNS = ("id", "strategy", "seed") + VALUE_COLUMNS
SELECTION_RULE = "best method minimises the maximum PE across the available networks (GCN paper 4.2)"
BASELINE = "bicubic"
# The columns of a method's dvc metrics file (metrics/<ds>/<slug>.json), with the selection rule's score
# (max_pe) and how often the method wins the rule on resamples (rule_share): few enough that every dataset
# and method fits one line of `dvc metrics show` at 200 columns.
HEADLINE = ("psnr_y", "ssim_y", "l2", "ssim_error", "pe_squeeze_lin", "pe_alex_lin", "pe_vgg_lin")


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError(f"{path}: cannot encode PNG")
    path.write_bytes(data.tobytes())


def model_folders(params: dict, dataset: str, root: Path) -> dict[tuple[str, int], Path | None]:
    """(strategy, seed) -> its trained model folder, for every selected strategy and `train.seeds`.

    Bicubic (always included, the baseline) is deterministic: one entry, its first seed folder, or
    None when it has none (it is then built here). A missing folder of another strategy is an error
    naming the train stage.
    """
    names = strategies.select(params["strategy"])
    if BASELINE not in names:
        names = [BASELINE] + names
    seeds = seed_list(params["train"])
    folders: dict[tuple[str, int], Path | None] = {}
    for name in names:
        slug = strategies.slug(name)
        found = [s for s in seeds if (root / paths.model_dir(dataset, slug, s) / "config.json").is_file()]
        if name == BASELINE:
            first = found[0] if found else seeds[0]
            folders[(name, first)] = root / paths.model_dir(dataset, slug, first) if found else None
            continue
        for seed in seeds:
            folder = root / paths.model_dir(dataset, slug, seed)
            if seed not in found:
                raise UserError(f"{folder}: strategy {name!r} has no trained model for dataset {dataset!r}, seed "
                                f"{seed}; run the train stage first (dvc repro train@{dataset})")
            folders[(name, seed)] = folder
    return folders


def load_models(params: dict, dataset: str, root: Path, scale: int,
                bicubic_kernel: str | None = None) -> dict[tuple[str, int], torch.nn.Module]:
    """The SR model of every selected strategy and seed, keyed (strategy, seed); bicubic once.

    Bicubic upscales with `bicubic_kernel`, by default the one of the profile's LR images
    (`kernels.bicubic_kernel(crop.downscale)`).
    """
    from pipeline.nets.networks import Bicubic, load_sr_model
    kernel = bicubic_kernel or kernels.bicubic_kernel(params["crop"].get("downscale", "bicubic"))
    return {key: Bicubic(scale, kernel).eval() if folder is None else load_sr_model(folder, kernel)
            for key, folder in model_folders(params, dataset, root).items()}


def selection(means: dict[str, dict], used: list[str]) -> dict:
    """The paper's rule: the winner minimises, over the strategies, the maximum PE over networks."""
    max_pe = {name: max(row[c] for c in used) for name, row in means.items()} if used else {}
    winner = min(max_pe, key=max_pe.get) if max_pe else None
    return {"rule": SELECTION_RULE, "winner": winner, "max_pe": max_pe, "networks_used": list(used)}


@torch.no_grad()
def score_batch(models: Mapping[Hashable, torch.nn.Module], nets: dict[str, perceptual.PerceptualNet],
                lr_u8: torch.Tensor, hr_u8: torch.Tensor, scale: int, device: torch.device
                ) -> dict[Hashable, tuple[np.ndarray, list[dict]]]:
    """Super-resolve one batch with every model and score it: {model key: (SR uint8 NxHxWx3, metric rows)}.

    The HR features of each perceptual net are computed once for all strategies; the SR images
    are scored as saved (8-bit), the low-level metrics of the whole batch at once on the device
    (`metrics.batch_metrics`, float64). Rows hold every value column, None for an n/a network.
    """
    lr_unit = to_unit(lr_u8).to(device)
    hr_device = hr_u8.to(device)
    hr_unit = to_unit(hr_u8).to(device)
    hr_feats = {net: model.features(hr_unit) for net, model in nets.items()}
    results = {}
    for name, model in models.items():
        sr_u8 = from_unit(model(lr_unit).float().cpu())
        sr_np = sr_u8.permute(0, 2, 3, 1).numpy()
        sr_unit = to_unit(sr_u8).to(device)
        low_level = metrics.batch_metrics(sr_u8.to(device), hr_device, scale)
        values = {col: v.cpu().tolist() for col, v in low_level.items()}
        for net, pnet in nets.items():
            raw, calibrated = pnet.distances(pnet.features(sr_unit), hr_feats[net])
            raw_col, lin_col = perceptual.columns(net)
            values[raw_col], values[lin_col] = raw.cpu().tolist(), calibrated.cpu().tolist()
        rows = [{col: values[col][i] if col in values else None for col in VALUE_COLUMNS} for i in range(len(sr_np))]
        results[name] = (sr_np, rows)
    return results


@torch.no_grad()
def evaluate_dataset(params: dict, dataset: str, root: Path = Path(".")) -> dict:
    """Evaluate the selected strategies (and bicubic), every seed, on `dataset`'s test split; returns the metrics dict."""
    root = Path(root)
    started = time.perf_counter()
    lr, hr, ids = load_pairs(dataset, "test", root)
    scale = hr.shape[-1] // lr.shape[-1]
    device = choose_device(params["train"].get("device", "auto"))
    bicubic = kernels.bicubic_kernel(params["crop"].get("downscale", "bicubic"))
    models = {key: m.to(device) for key, m in load_models(params, dataset, root, scale, bicubic).items()}
    names = list(dict.fromkeys(name for name, _ in models))
    first_seed = {name: min(seed for n, seed in models if n == name) for name in names}
    order = params["eval"].get("weights_order", DEFAULT_ORDER)
    nets, status = perceptual.load_networks(params["eval"]["networks"], order, root, device)
    for net, state in status.items():
        if not state["available"]:
            log.warning("perceptual net %s is n/a: %s", net, state["reason"])

    sr_root = root / paths.results_dir(dataset) / "sr"
    sr_root.mkdir(parents=True, exist_ok=True)
    staging = {name: Path(tempfile.mkdtemp(dir=sr_root, prefix=f".{strategies.slug(name)}.")) for name in names}
    rows: list[dict] = []
    batch_size = int(params["eval"]["batch_size"])
    try:
        for start in tqdm(range(0, len(ids), batch_size), desc=f"evaluate {dataset}", unit="batch"):
            stop = min(start + batch_size, len(ids))
            results = score_batch(models, nets, lr[start:stop], hr[start:stop], scale, device)
            for (name, seed), (sr_np, scores) in results.items():
                for i, image_id in enumerate(ids[start:stop]):
                    if seed == first_seed[name]:      # the figures show one seed's images
                        _write_png(staging[name] / f"{image_id}.png", sr_np[i])
                    rows.append({"id": image_id, "strategy": name, "seed": seed, **scores[i]})
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

    means, stds = {}, {}
    for name in names:
        part = [r for r in rows if r["strategy"] == name]
        means[name], stds[name] = {}, {}
        for col in VALUE_COLUMNS:
            means[name][col], stds[name][col] = metrics.aggregate([r[col] for r in part], col)
    used = [c for net in params["eval"]["networks"] if net in nets for c in perceptual.columns(net)]
    frame = tables.per_image_frame(table, dataset)
    rule = selection(means, used)
    rule.update(selection_frequencies(frame, dataset, used, names))
    agreement = rank_agreement(means, params, dataset)
    result = {
        "dataset": dataset,
        "n_test": len(ids),
        "n_seeds": max(len([k for k in models if k[0] == name]) for name in names),
        "seeds": sorted({seed for _, seed in models}),
        "scale": scale,
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        "strategies": means,
        "std": stds,
        "stats": uncertainty(frame, dataset, names),
        "networks": status,
        "selection": rule,
        "rank_agreement": agreement,
        "verdict": tables.dataset_verdict(dataset, agreement),
        "bicubic_kernel": bicubic,
        "conventions": {
            "bicubic": f"the untrained baseline upscales with {kernels.BICUBIC_KERNELS[bicubic]}, the convention of "
                       f"this profile's LR images (crop.downscale: {params['crop'].get('downscale', 'bicubic')})",
            "l2": "the paper's L2: mean squared error of RGB in [-1,1] (= 4 x mse), whole image, as Zhang et al.'s "
                  "DistModel('L2', colorspace='RGB') (evidence: bench/metric-convention.md)",
            "ssim_error": "the paper's SSIM column: DSSIM = (1 - SSIM) / 2 with scikit-image's default SSIM "
                          "(7x7 uniform window, sample covariance), RGB mean, whole image, as Zhang et al.'s dssim",
            "mse": "mean squared error, RGB in [0,1], whole image (not in the paper)",
            "ssim": "SSIM of Wang et al.: Gaussian window sigma 1.5 (11x11), population covariance, RGB mean, whole image (not in the paper)",
            "psnr": f"RGB in [0,1], {scale}-pixel border shaved; means cap per-image PSNR at {metrics.PSNR_CAP:g} dB",
            "psnr_y": f"MATLAB rgb2ycbcr luma (BT.601, Y in [16,235], unrounded), peak 255, {scale}-pixel border shaved (BasicSR test_y_channel)",
            "ssim_y": f"SSIM of the same luma, Gaussian 11x11 sigma 1.5, data range 255, {scale}-pixel border shaved (BasicSR test_y_channel)",
            "stats": "strategies: mean over seeds and images; stats: 95% percentile interval of a bootstrap "
                     "resampling seeds and images independently, seed_sd = sd of the per-seed means, "
                     "rank/tied_with_best/p_holm: paired Wilcoxon over test images against the column's best, "
                     # the record's text still names the module as pipeline.stats: the package layout
                     # changed without changing any output (pipeline.evaluation.stats)
                     f"Holm-corrected, alpha {stats.ALPHA} (pipeline.stats)",
            "pe": "pe_<net>_lin: LPIPS v0.1 calibrated; pe_<net>: LPIPS(lpips=False)/2 = sum over layers of the spatial mean of 1 - cos (uncalibrated, as the paper)",
        },
    }
    unavailable = {net: state.get("reason") or "weights unavailable" for net, state in status.items()
                   if not state["available"]}
    result["deviations"] = (deviations.parameter_deviations(params)
                            + deviations.dataset_deviations(params, dataset, root, len(ids))
                            + deviations.network_deviations(root, unavailable, names))
    finite = _finite(result)
    write_record(root / paths.metrics_path(dataset), finite)
    write_headlines(root / paths.method_metrics_dir(dataset), finite)
    return result


def headline(result: dict, name: str) -> dict:
    """One method's dvc metrics: its means of the HEADLINE columns (an n/a network's left out), max_pe, rule_share."""
    means = result["strategies"][name]
    out = {column: means[column] for column in HEADLINE if means.get(column) is not None}
    rule = result["selection"]
    if name in rule.get("max_pe", {}):
        out["max_pe"] = rule["max_pe"][name]
        out["rule_share"] = rule.get("frequencies", {}).get(name, 0.0)
    return out


def write_headlines(folder: Path, result: dict) -> None:
    """metrics/<ds>/<slug>.json for every evaluated method; the folder is replaced whole (no stale method)."""
    with staged(folder) as tmp:
        for name in result["strategies"]:
            atomic_write_json(tmp / f"{strategies.slug(name)}.json", headline(result, name))


# ----------------------------------------------------------------------------- uncertainty (pipeline.evaluation.stats)

def uncertainty(frame: pd.DataFrame, dataset: str, names: list[str]) -> dict[str, dict[str, dict]]:
    """``strategy -> column -> {ci_low, ci_high, seed_sd, rank, tied_with_best, p_holm}`` (stats.column_table).

    Columns without values (an n/a network) are left out of a strategy's entry.
    """
    out: dict[str, dict[str, dict]] = {name: {} for name in names}
    for column in tables.COLUMNS:
        arrays = tables.column_arrays(frame, dataset, column.key, names)
        compared = stats.compare_to_best(arrays, column.lower_is_better)
        for name, values in arrays.items():
            cell = stats.cell_stats(values)
            out[name][column.key] = {"ci_low": cell["ci_low"], "ci_high": cell["ci_high"], "seed_sd": cell["seed_sd"],
                                     "rank": compared[name]["rank"],
                                     "tied_with_best": bool(compared[name]["tied_with_best"]),
                                     "p_holm": compared[name]["p_holm"]}
    return out


def selection_frequencies(frame: pd.DataFrame, dataset: str, used: list[str], names: list[str]) -> dict:
    """How often each method wins the paper's rule on resamples of seeds and images (stats.winner_frequencies).

    ``frequencies``: among every evaluated method; ``gcn_winner`` and ``gcn_frequencies``: among the
    GCN variants (the Table 2 pick carried into Tables 3 and 4). Methods lacking a used column are left out.
    ``deciding_column``: per method, the column that gives its maximum PE (the one the rule ranks it by).
    ``relative``: the same for our scale-free variant (stats.relative_minimax_pe, PE relative to bicubic's
    on the same images), with each method's score ``max_relative_pe`` and the column giving it
    (``deciding_column``); empty without bicubic.
    """
    scores: dict[str, dict[str, np.ndarray]] = {}
    per_column = {column: tables.column_arrays(frame, dataset, column, names) for column in used}
    for name in names:
        if used and all(name in per_column[c] for c in used):
            scores[name] = {c: per_column[c][name] for c in used}
    means = {n: {c: float(v.mean()) for c, v in nets.items()} for n, nets in scores.items()}
    gcn = [n for n in tables.GCN_VARIANTS if n in scores]
    out = {"frequencies": {}, "gcn_winner": None, "gcn_frequencies": {},
           "deciding_column": tables.deciding_columns(means), "relative": {}}
    if scores:
        out["frequencies"] = stats.winner_frequencies(scores)
    if gcn:
        out["gcn_winner"] = stats.minimax_pe(means, gcn)
        out["gcn_frequencies"] = stats.winner_frequencies(scores, candidates=gcn)
    if BASELINE in scores:
        relative = functools.partial(stats.relative_minimax_pe, reference=BASELINE)
        ratios = stats.relative_pe(means, BASELINE)
        out["relative"] = {
            "rule": tables.RELATIVE_RULE, "reference": BASELINE,
            "max_relative_pe": {n: max(row.values()) for n, row in ratios.items()},
            # where each method gains least over bicubic (bicubic's own ratios are all 1: no column decides)
            "deciding_column": tables.deciding_columns({n: r for n, r in ratios.items() if n != BASELINE}),
            "winner": relative(means), "frequencies": stats.winner_frequencies(scores, rule=relative),
            "gcn_winner": relative(means, gcn) if gcn else None,
            "gcn_frequencies": stats.winner_frequencies(scores, candidates=gcn, rule=relative) if gcn else {}}
    return out


def rank_agreement(means: dict[str, dict], params: dict, dataset: str) -> dict[str, dict]:
    """Kendall's tau of our means against the paper's, per in-paper column: ``label -> {tau, p_value, n, min_p, verdict}``.

    A stand-in dataset is compared with the paper's dataset it stands in for; a dataset the paper
    does not have gives ``{}``. Methods without a value on either side (n/a, ours only) are dropped.
    """
    paper_ds, _ = tables.paper_dataset(params, dataset)
    if paper_ds is None:
        return {}
    paper = tables.load_paper()
    out = {}
    for column in tables.COLUMNS:
        if not column.in_paper:
            continue
        ours = {name: row.get(column.key) for name, row in means.items()}
        theirs = {name: tables.paper_value(paper, paper_ds, name, column.key) for name in means}
        result = stats.rank_agreement(ours, theirs, column.lower_is_better)
        out[column.key] = {"tau": result["tau"], "p_value": result["p_value"], "n": result["n"],
                           "min_p": result["min_p"], "verdict": stats.verdict(dataset, column.label, result)}
    return out


def _finite(value):
    """JSON has no inf/NaN: such values become null (means are already finite by construction)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
