"""The versioned HTML report: Tables 2-5 beside the paper, figures, training curves, run card.

`build_report` reads what the other stages wrote (metrics/<ds>.json, metrics/<ds>-benchmarks.json,
results/<ds>/per_image.csv, results/<ds>/sr/, data/crops/<ds>/, models/<ds>/<slug>/seed-<k>/,
data/raw/<ds>/SOURCE.json, weights/manifest.json) and writes, under reports/:

- `<version>/index.html`: one self-contained page (inline CSS, images as data: URIs) that
  opens offline; `<version>/summary.json`: the numbers the comparison page needs;
- `index.html`: the lead version's page and every version found (pipeline.reporting.landing decides the lead
  and which runs are smoke runs, from their own numbers);
- `compare.html`: the headline numbers of every version side by side, the parameters that matter first.

The version is the DVC experiment name inside `dvc exp run` (DVC sets DVC_EXP_NAME for every
stage command of an experiment), else `<git short rev>[-dirty]-<params hash>`. The run card shows the
commit a `<rev>-<hash>` name names, so name and card agree even when a page is rendered again later.
The table logic lives in pipeline.reporting.tables, that of the standard SR protocol's table (our
Set5/Set14/BSD100 scores beside SRGAN's and the DP paper's) in pipeline.reporting.published.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any, Mapping

import cv2
import jinja2
import numpy as np
import pandas as pd
import yaml

from pipeline import paths
from pipeline.data import kernels, sources
from pipeline.data.imageset import read_manifest, read_png
from pipeline.errors import UserError
from pipeline.evaluation import stats, verdicts
from pipeline.fileio import atomic_write_text, merge_record, provenance_path
from pipeline.nets import strategies
from pipeline.reporting import deviations, landing, published, tables

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
PACKAGES = ("torch", "torchvision", "lpips", "dvc", "snakemake", "numpy", "pandas", "scikit-image",
            "opencv-python-headless", "jinja2", "matplotlib", "PyYAML")
# The comparison page's headline numbers: the selection rule's score, then two single networks.
COMPARE_METRICS = (
    ("max_pe", "max PE (the selection rule's score)"),
    ("pe_alex_lin", "Alex-l (calibrated AlexNet PE)"),
    ("pe_vgg_lin", "VGG-l (calibrated VGG PE)"),
    ("l2", "L2"),
)
# The parameters compare.html shows first, in this order (the others that differ are folded).
KEY_PARAMS = (("datasets", "datasets"), ("strategy", "strategies"), ("train.iterations", "iterations"),
              ("crop.hr_size", "HR crop (px)"), ("train.seeds", "seeds"))
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Git pathspecs of files whose changes do not make a run's code "dirty": outputs of the run itself,
# .gitignore entries DVC adds, and the parameters, which the version names by their hash.
NOT_CODE = (":(exclude)dvc.lock", ":(exclude)params.yaml", ":(exclude)reports", ":(exclude)metrics",
            ":(exclude)plots", ":(exclude,glob)**/.gitignore")


# ---------------------------------------------------------------- small helpers

def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def read_record(path: Path) -> dict | None:
    """A record pipeline.fileio.write_record wrote: its numbers (None when missing) with its provenance merged in."""
    numbers = _read_json(path)
    if numbers is None:
        return None
    return merge_record(numbers, _read_json(provenance_path(path)) or {})


def _png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_info(root: Path) -> dict:
    """The code's git revision and whether tracked source files differ from it."""
    rev = _git(root, "rev-parse", "HEAD")
    if not rev:
        return {"available": False, "rev": None, "short": None, "dirty": False}
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".",
                  *NOT_CODE)
    return {"available": True, "rev": rev, "short": rev[:7], "dirty": bool(status)}


def params_hash(params: Mapping) -> str:
    """8 hex digits identifying a parameter set (order of keys does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


# A version name that claims a commit and a parameter set: `<short rev>[-dirty]-<params hash>`.
REV_VERSION = re.compile(r"^(?P<rev>[0-9a-f]{7,40})(?P<dirty>-dirty)?-(?P<hash>[0-9a-f]{8})$")


def _named_commit(root: Path, name: str, params: Mapping) -> dict | None:
    """The git record of the commit a `<rev>[-dirty]-<hash>` version name claims, or None for other names.

    The run card shows this commit, so the version's name and its card can never disagree (a report
    re-rendered later under its original name keeps that name's commit). A name whose hash is not these
    params' hash, or whose commit this checkout lacks, would lie about the run: a UserError.
    """
    match = REV_VERSION.match(name)
    if not match:
        return None
    if match["hash"] != params_hash(params):
        raise UserError(f"report version {name!r} names params hash {match['hash']}, but these params hash to "
                        f"{params_hash(params)}: leave --version out or name the run otherwise")
    rev = _git(root, "rev-parse", "--verify", "--quiet", match["rev"] + "^{commit}")
    if not rev:
        raise UserError(f"report version {name!r} names git commit {match['rev']}, which this checkout does not have")
    return {"available": True, "rev": rev, "short": rev[:7], "dirty": bool(match["dirty"])}


def report_identity(params: Mapping, root: Path = Path("."),
                    override: str | None = None) -> tuple[str, dict]:
    """The name of this report's folder under reports/ (see the module docstring) and the git record its
    run card shows: the commit a `<rev>-<hash>` name names, else the checkout's HEAD."""
    name = override or os.environ.get("DVC_EXP_NAME")
    head = git_info(root)
    if not name:
        rev = (head["short"] + ("-dirty" if head["dirty"] else "")) if head["available"] else "nogit"
        return f"{rev}-{params_hash(params)}", head
    if not VERSION_PATTERN.match(name):
        raise UserError(f"report version {name!r}: use letters, digits, '.', '_' and '-' only (it names a folder)")
    return name, _named_commit(root, name, params) or head


def report_version(params: Mapping, root: Path = Path("."), override: str | None = None) -> str:
    """The name of this report's folder under reports/ (see `report_identity`)."""
    return report_identity(params, root, override)[0]


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys (`train.iterations`), lists kept as their JSON text."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def package_versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def ordered(names) -> list[str]:
    """Strategy names in the registry's order, unknown names last."""
    known = [n for n in strategies.NAMES if n in names]
    return known + sorted(n for n in names if n not in strategies.NAMES)


# ---------------------------------------------------------------- inputs

def load_metrics(params: Mapping, root: Path) -> dict[str, dict]:
    """metrics/<ds>.json of every dataset of the run; a missing one is a clear error."""
    out = {}
    for ds in params["datasets"]:
        path = root / paths.metrics_path(ds)
        record = read_record(path)
        if record is None:
            raise UserError(f"{path}: no metrics for dataset {ds!r}; run the evaluate stage first (dvc repro evaluate@{ds})")
        out[ds] = record
    return out


def load_benchmarks(params: Mapping, root: Path) -> dict[str, dict]:
    """metrics/<ds>-benchmarks.json (the standard SR protocol) of every dataset of the run that has one."""
    out = {}
    for ds in params["datasets"]:
        record = read_record(root / paths.benchmark_metrics_path(ds))
        if record:
            out[ds] = record
    return out


def load_frames(params: Mapping, root: Path) -> dict[str, pd.DataFrame]:
    """results/<ds>/per_image.csv of every dataset that has one, in pipeline.evaluation.stats' long form (ties with the best)."""
    out = {}
    for ds in params["datasets"]:
        path = root / paths.results_dir(ds) / "per_image.csv"
        if path.is_file():
            out[ds] = tables.per_image_frame(pd.read_csv(path, dtype={"id": str}), ds)
        else:
            log.warning("%s: missing; the tables mark ties as printed, without the paired test", path)
    return out


def seed_folders(dataset: str, name: str, root: Path) -> list[Path]:
    """models/<ds>/<slug>/seed-<k>/ folders holding a config.json, by seed."""
    base = root / paths.models_dir(dataset) / strategies.slug(name)
    found = [f for f in base.glob("seed-*") if (f / "config.json").is_file() and f.name[5:].isdigit()]
    return sorted(found, key=lambda f: int(f.name[5:]))


def model_records(dataset: str, names, root: Path) -> dict[str, dict]:
    """Per strategy with a trained model: its first seed's config.json, with ``seconds`` summed over
    its seeds and ``n_seeds``."""
    out = {}
    for name in names:
        configs = [_read_json(f / "config.json") for f in seed_folders(dataset, name, root)]
        if configs:
            total = sum(float(c.get("seconds") or 0) for c in configs)
            out[name] = {**configs[0], "seconds": total if any(c.get("seconds") for c in configs) else None,
                         "n_seeds": len(configs)}
    return out


# ---------------------------------------------------------------- figures

# Qualitative panels (the paper's Figs. 5-7): every image is shown at an integer nearest-neighbour
# enlargement, drawn by the browser (CSS image-rendering: pixelated) from the PNG at its own size, so
# each source pixel is a square block: texture and artefacts are judged pixel by pixel.
PANEL_PX = 240          # about this wide on screen: 5 panels fit a 1366 px window side by side
MAX_PANEL_PX = 512      # a large crop is enlarged less rather than wider than this
MIN_ENLARGE = 4         # at least 4x, unless that passes MAX_PANEL_PX (paper-scale 256 px crops: 2x)
MIN_ZOOM_WINDOW = 24    # source pixels on a side of the zoom window (the whole crop when smaller)


def enlargement(size: int) -> int:
    """The integer nearest-neighbour factor an image of `size` px is shown at: about PANEL_PX wide, at least
    MIN_ENLARGE unless that passes MAX_PANEL_PX (48 px -> 5x, 64 px -> 4x, 24 px -> 10x, 256 px -> 2x)."""
    return max(1, PANEL_PX // size, min(MIN_ENLARGE, MAX_PANEL_PX // size))


def zoom_box(hr: np.ndarray, zoom: int) -> tuple[int, int, int]:
    """(y, x, size) of the square window with the most detail (gradient energy) in an HR image; its side is
    H/zoom, at least MIN_ZOOM_WINDOW source pixels, at most the image."""
    height, width = hr.shape[:2]
    size = min(height, width, max(MIN_ZOOM_WINDOW, min(height, width) // max(zoom, 1)))
    grey = hr.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(grey, axis=0, append=grey[-1:])) + np.abs(np.diff(grey, axis=1, append=grey[:, -1:]))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = integral[size:, size:] - integral[:-size, size:] - integral[size:, :-size] + integral[:-size, :-size]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), size


def _nearest_upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    ys = (np.arange(height) * image.shape[0] // height).clip(0, image.shape[0] - 1)
    xs = (np.arange(width) * image.shape[1] // width).clip(0, image.shape[1] - 1)
    return image[ys][:, xs]


def _png_uri(image: np.ndarray) -> str:
    """An RGB uint8 array as a PNG data URI, pixel for pixel."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise UserError("could not encode a figure panel as PNG")
    return "data:image/png;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def _panel(key: str, title: str, image: np.ndarray | None, box: tuple[int, int, int],
           winner: bool = False) -> dict:
    """One panel: the image and its zoom window, each as a PNG at its own size with the factor it is shown at.

    ``box`` (y, x, size) is in the image's pixels; the outline's place on screen is box x factor.
    """
    panel = {"key": key, "title": title, "method": key not in ("lr", "hr"), "winner": winner,
             "missing": image is None}
    if image is None:
        return panel
    y, x, size = box
    height, width = image.shape[:2]
    factor, zoom_factor = enlargement(max(height, width)), enlargement(size)
    panel.update(uri=_png_uri(image), width=width * factor, height=height * factor, factor=factor,
                 box={"left": x * factor, "top": y * factor, "size": size * factor},
                 zoom_uri=_png_uri(np.ascontiguousarray(image[y:y + size, x:x + size])),
                 zoom_size=size * zoom_factor, zoom_factor=zoom_factor)
    return panel


def _image_panels(dataset: str, names: list[str], row: pd.Series, root: Path, zoom: int, winner: str | None,
                  missing: list[str]) -> dict:
    """One test crop's panels: the LR input (nearest neighbour to the HR size, so every panel shares the
    zoom window), each method's SR output (None where its file is missing, named in `missing`), and HR."""
    base = root / paths.crops_dir(dataset)
    hr, lr = read_png(base / row["hr"]), read_png(base / row["lr"])
    box = zoom_box(hr, zoom)
    scale = hr.shape[0] // max(lr.shape[0], 1)
    panels = [_panel("lr", f"LR input (x{scale} nearest)", _nearest_upscale(lr, *hr.shape[:2]), box)]
    for name in names:
        path = root / paths.results_dir(dataset) / "sr" / strategies.slug(name) / f"{row['id']}.png"
        image = read_png(path) if path.is_file() else None
        if image is None:
            missing.append(f"{strategies.slug(name)}/{row['id']}.png")
        panels.append(_panel(name, tables.method_label(name), image, box, winner=name == winner))
    panels.append(_panel("hr", "HR (reference)", hr, box))
    return {"id": str(row["id"]), "panels": panels, "window": box[2], "hr_size": hr.shape[0]}


def qualitative_figure(dataset: str, names: list[str], root: Path, n_images: int, zoom: int,
                       winner: str | None = None) -> dict | None:
    """Like the paper's Figs. 5-7: per test image, LR input | each method | HR, each with its zoom window."""
    if n_images < 1:
        return None
    manifest = read_manifest(dataset, root)
    rows = manifest[manifest["split"] == "test"].sort_values("id").head(n_images)
    if rows.empty:
        return None
    missing: list[str] = []
    images = [_image_panels(dataset, names, row, root, zoom, winner, missing) for _, row in rows.iterrows()]
    return {"images": images, "ids": [i["id"] for i in images], "missing": missing}


VALIDATION_PANELS = (("val_psnr_y", "PSNR-Y (dB), higher is better"), ("val_ssim_y", "SSIM-Y, higher is better"),
                     ("val_lpips_alex", "LPIPS Alex-lin, lower is better"))


def _first_seed_logs(dataset: str, names: list[str], root: Path) -> tuple[dict, dict, list[str]]:
    """Each strategy's first seed's log.csv and validation.csv as frames (those that exist and have rows),
    and the strategies with a seed whose discriminator won outright (config.json's d_wins)."""
    def frame_of(path: Path | None) -> pd.DataFrame | None:
        if path is None or not path.is_file():
            return None
        frame = pd.read_csv(path)
        return frame if "iteration" in frame.columns and len(frame) else None

    logs, validation, d_wins = {}, {}, []
    for name in names:
        folders = seed_folders(dataset, name, root)
        if any((_read_json(f / "config.json") or {}).get("d_wins") for f in folders):
            d_wins.append(name)
        for found, file in ((logs, "log.csv"), (validation, "validation.csv")):
            frame = frame_of(folders[0] / file if folders else None)
            if frame is not None:
                found[name] = frame
    return logs, validation, d_wins


def _loss_figure(logs: dict, d_wins: list[str]) -> str:
    """One panel per strategy: its losses over iterations (log scale when all positive), as a PNG data URI."""
    from matplotlib.figure import Figure

    n_cols = min(5, len(logs))
    n_rows = -(-len(logs) // n_cols)
    fig = Figure(figsize=(3.4 * n_cols, 2.5 * n_rows), dpi=100, layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (name, frame) in zip(axes, logs.items()):
        losses = [c for c in frame.columns if c.startswith("loss")]
        positive = all((frame[c].dropna() > 0).all() for c in losses)
        for column in losses:
            ax.plot(frame["iteration"], frame[column], linewidth=1, label=column.removeprefix("loss_"))
        if positive and losses:
            ax.set_yscale("log")
        won = name in d_wins
        ax.set_title(tables.method_label(name) + (" (D won outright)" if won else ""), fontsize=9,
                     color="#b30000" if won else "black")
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if losses:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(logs):]:
        ax.set_visible(False)
    return _png_data_uri(fig)


def _validation_figure(validation: dict) -> tuple[str, list[str]]:
    """The validation metrics of every strategy overlaid, one panel per metric: (PNG data URI, metrics drawn)."""
    from matplotlib.figure import Figure

    panels = [(c, t) for c, t in VALIDATION_PANELS if any(f[c].notna().any() for f in validation.values()
                                                           if c in f.columns)]
    fig = Figure(figsize=(3.6 * len(panels) + 1.6, 2.8), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (column, title) in zip(axes, panels):
        for name, frame in validation.items():
            if column in frame.columns and frame[column].notna().any():
                ax.plot(frame["iteration"], frame[column], marker="o", markersize=3, linewidth=1,
                        label=tables.method_label(name))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    return _png_data_uri(fig), [c for c, _ in panels]


def training_curves(dataset: str, names: list[str], root: Path) -> dict | None:
    """Loss over iterations of every trained strategy (its first seed's log.csv), one panel each, and the
    validation metrics of every strategy overlaid (its first seed's validation.csv, pipeline.training.monitor).

    ``d_wins`` lists the strategies with a seed whose discriminator won outright (config.json).
    """
    logs, validation, d_wins = _first_seed_logs(dataset, names, root)
    if not logs:
        return None
    out = {"uri": _loss_figure(logs, d_wins), "strategies": list(logs), "validation": list(validation),
           "validation_uri": None, "d_wins": d_wins}
    if validation:
        out["validation_uri"], out["validation_metrics"] = _validation_figure(validation)
    return out


# ---------------------------------------------------------------- run card

def _files_list(files: Any) -> list[dict]:
    """SOURCE.json `files` as rows {name, sha256, size}, whether a list of records or a mapping."""
    rows = []
    if isinstance(files, Mapping):
        for name, value in files.items():
            record = dict(value) if isinstance(value, Mapping) else {"sha256": value}
            rows.append({"name": name, "sha256": record.get("sha256"), "size": record.get("size")})
    elif isinstance(files, list):
        for item in files:
            if isinstance(item, Mapping):
                name = item.get("name") or item.get("path") or item.get("file") or "?"
                rows.append({"name": name, "sha256": item.get("sha256"), "size": item.get("size")})
            else:
                rows.append({"name": str(item), "sha256": None, "size": None})
    return rows


MAX_FILES_LISTED = 20


def data_sources(params: Mapping, root: Path) -> list[dict]:
    """Per dataset: SOURCE.json (origin, licence, file checksums) and the crop stage's info.json."""
    out = []
    for ds in params["datasets"]:
        record = _read_json(root / paths.raw_dir(ds) / "SOURCE.json") or {}
        info = _read_json(root / paths.crops_dir(ds) / "info.json") or {}
        fields = {k: v for k, v in record.items() if k != "files" and not isinstance(v, (dict, list))}
        nested = {k: v for k, v in record.items() if k != "files" and isinstance(v, (dict, list))}
        files = _files_list(record.get("files"))
        # one digest over every file's checksum identifies the whole raw set even when the list is cut
        digest = hashlib.sha256("\n".join(f"{f['name']} {f['sha256']}" for f in files).encode()).hexdigest()
        crops = {k: info[k] for k in ("counts", "requested", "prep", "hr_size", "lr_size", "scale", "downscale",
                                      "lr_from", "split", "seed", "skipped", "converted") if info.get(k) not in (None, {}, [])}
        out.append({"dataset": ds, "found": bool(record), "fields": fields,
                    "nested": {k: json.dumps(v) for k, v in nested.items()},
                    "files": files[:MAX_FILES_LISTED], "n_files": len(files), "files_digest": digest if files else None,
                    "description": params["data"][ds].get("description", ""),
                    "crops": {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in crops.items()}})
    return out


def _weight_rows(record: Any) -> list[dict]:
    """Weights records as rows {name, available, source, sha256, reason}.

    Accepts one record, a list of records (each naming its `network`), or a mapping network -> record.
    """
    if isinstance(record, list):
        items = [(r.get("network") or r.get("name") or "", r) for r in record if isinstance(r, Mapping)]
    elif isinstance(record, Mapping) and any(k in record for k in ("sha256", "source", "available")):
        items = [(record.get("network") or record.get("name") or "", record)]
    elif isinstance(record, Mapping):
        items = [(name, value) for name, value in record.items() if isinstance(value, Mapping)]
    else:
        items = []
    return [{"name": name, "available": value.get("available", value.get("sha256") is not None),
             "source": value.get("source"), "sha256": value.get("sha256"), "reason": value.get("reason")}
            for name, value in items]


def weight_sources(root: Path, records: Mapping[str, Mapping[str, dict]]) -> dict:
    manifest = _read_json(root / paths.WEIGHTS / "manifest.json") or {}
    if isinstance(manifest.get("networks"), Mapping):
        manifest = manifest["networks"]
    used = []
    for ds, per_strategy in records.items():
        for name, config in per_strategy.items():
            for row in _weight_rows(config.get("weights")):
                used.append({"dataset": ds, "strategy": name, **row})
    return {"manifest": _weight_rows(manifest), "used": used}


def stage_timings(params: Mapping, metrics: Mapping[str, dict], records: Mapping[str, Mapping[str, dict]],
                  root: Path) -> dict:
    per_dataset, per_model = [], []
    for ds in params["datasets"]:
        info = _read_json(root / paths.crops_dir(ds) / "info.json") or {}
        trained = records.get(ds, {})
        train_total = sum(float(c.get("seconds") or 0) for c in trained.values())
        per_dataset.append({"dataset": ds, "crop": info.get("seconds"), "train": train_total if trained else None,
                            "evaluate": metrics[ds].get("seconds")})
        for name, config in trained.items():
            per_model.append({"dataset": ds, "strategy": name, "untrained": bool(config.get("untrained")),
                              "n_seeds": config.get("n_seeds", 1),
                              "iterations": config.get("iterations"), "seconds": config.get("seconds"),
                              "seconds_per_iteration": config.get("seconds_per_iteration"),
                              "device": config.get("device"), "precision": config.get("precision")})
    return {"datasets": per_dataset, "models": per_model}


def approximations(params: Mapping, deviations_list: list[dict]) -> list[str]:
    """Every way this run differs from the paper's experiment, in words (generated from the deviations)."""
    notes = [deviations.describe(d) for d in deviations_list]
    selected = strategies.select(params["strategy"])
    if not set(strategies.group("gcn")) <= set(selected):   # the paper's methods not all run
        notes.append("Only these strategies were selected for training: " + ", ".join(selected) + ".")
    return notes


def bicubic_kernels(metrics: Mapping[str, dict], benchmarks: Mapping[str, dict]) -> list[str]:
    """The run card's lines on the bicubic baseline: the upscaling kernel (pipeline.data.kernels) each stage used.

    A record without ``bicubic_kernel`` was written before the kernel followed the profile: OpenCV's then.
    """
    datasets: dict[str, list[str]] = {}
    for ds, record in metrics.items():
        datasets.setdefault(record.get("bicubic_kernel", kernels.OPENCV), []).append(ds)
    lines = [f"{kernels.BICUBIC_KERNELS[k]}: test crops of {', '.join(names)}" for k, names in datasets.items()]
    protocol = {record.get("bicubic_kernel", kernels.OPENCV) for record in benchmarks.values() if record.get("benchmarks")}
    return lines + [f"{kernels.BICUBIC_KERNELS[k]}: the standard SR protocol (whole test-only images)" for k in protocol]


def run_card(params: Mapping, metrics: Mapping[str, dict], root: Path, version: str,
             git: dict | None = None) -> dict:
    """Everything that identifies and reproduces the run. ``git``: the commit the version names
    (`report_identity`); ``rendered_at`` is the checkout's HEAD when the page was rendered elsewhere."""
    head = git_info(root)
    git = git or head
    records = {ds: model_records(ds, strategies.NAMES, root) for ds in params["datasets"]}
    found = deviations.run_deviations(params, metrics, root)
    devices = sorted({str(m.get("device")) for m in metrics.values() if m.get("device")}
                     | {str(c.get("device")) for r in records.values() for c in r.values() if c.get("device")})
    # the trainer's arithmetic (pipeline.training.fast.precision): bf16 autocast or fp32, as each model's config.json records it
    precisions = sorted({str(c["precision"]) for r in records.values() for c in r.values() if c.get("precision")})
    return {
        "version": version,
        "git": git,
        "rendered_at": head["short"] if head["available"] and head["rev"] != git.get("rev") else None,
        "exp_name": os.environ.get("DVC_EXP_NAME"),
        "baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        "params_hash": params_hash(params),
        "params_yaml": yaml.safe_dump(dict(params), sort_keys=False, default_flow_style=None, width=100),
        "packages": package_versions(),
        "platform": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "devices": devices,
        "precisions": precisions,
        "bicubic": bicubic_kernels(metrics, load_benchmarks(params, root)),
        "timings": stage_timings(params, metrics, records, root),
        "data_sources": data_sources(params, root),
        "weights": weight_sources(root, records),
        "deviations": found,
        "approximations": approximations(params, found),
        "conventions": next((m["conventions"] for m in metrics.values() if m.get("conventions")), {}),
    }


# ---------------------------------------------------------------- summary and versions

def summary(params: Mapping, metrics: Mapping[str, dict], version: str, card: dict, created: str) -> dict:
    """What the comparison page needs from one version (written as reports/<version>/summary.json):
    means, their 95% intervals (``ci``: key -> [low, high]), the rule's winner frequencies and Kendall's tau."""
    datasets = {}
    for ds, record in metrics.items():
        scores = tables.rule_scores(record)
        paper_ds, stand_in = tables.paper_dataset(params, ds)
        rule = record.get("selection") or {}
        rows = {}
        for name, values in record.get("strategies", {}).items():
            spread = (record.get("stats") or {}).get(name) or {}
            rows[name] = {c.key: values.get(c.key) for c in tables.COLUMNS} | {"max_pe": scores.get(name)} | {
                "ci": {k: [v.get("ci_low"), v.get("ci_high")] for k, v in spread.items()},
                "tied_with_best": [k for k, v in spread.items() if v.get("tied_with_best")]}
        datasets[ds] = {
            "paper_dataset": paper_ds, "stand_in": stand_in, "n_test": record.get("n_test"),
            "n_seeds": record.get("n_seeds", 1),
            "winner": rule.get("winner") or tables.select_method(scores, rows),
            "winner_frequencies": rule.get("frequencies") or {},
            "selected_gcn": tables.select_method(scores, tables.GCN_VARIANTS),
            "selected_gcn_frequencies": rule.get("gcn_frequencies") or {},
            "rank_agreement": {k: {f: v.get(f) for f in ("tau", "p_value", "n")}
                               for k, v in (record.get("rank_agreement") or {}).items()},
            "verdict": record.get("verdict"),
            "strategies": rows,
        }
    return {"version": version, "created": created, "git": card["git"], "exp_name": card["exp_name"],
            "params_hash": card["params_hash"], "params": flatten(params), "deviations": card["deviations"],
            "datasets": datasets}


def list_versions(reports: Path) -> list[dict]:
    """Every reports/<version>/summary.json, newest first."""
    out = []
    for path in sorted(reports.glob("*/summary.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("%s: unreadable, left out of the version list", path)
            continue
        if not isinstance(record, dict):
            continue
        # summaries written by older code may lack fields the pages show
        record["folder"] = path.parent.name
        record["git"] = {"short": None, "dirty": False, **(record.get("git") or {})}
        for key, default in (("created", ""), ("exp_name", None), ("params_hash", ""), ("params", {}), ("datasets", {})):
            if record.get(key) is None:
                record[key] = default
        out.append(record)
    return sorted(out, key=lambda r: (str(r.get("created", "")), r["folder"]), reverse=True)


def comparison(versions: list[dict]) -> dict:
    """The comparison page's content: the parameters that matter (KEY_PARAMS, always shown), the other
    parameters that differ between versions (folded on the page), and headline metrics per dataset x strategy
    x version with two marks kept apart: ``best`` (the column's best value within a version) and ``winner``
    (the selection rule's winner of that version, which need not be best on a single metric)."""
    keys = sorted({k for v in versions for k in v.get("params", {})})
    differing = [k for k in keys if len({json.dumps(v.get("params", {}).get(k), default=str) for v in versions}) > 1]
    key_names = [k for k, _ in KEY_PARAMS]
    datasets = []
    for ds in dict.fromkeys(d for v in versions for d in v.get("datasets", {})):
        names = ordered({n for v in versions for n in v.get("datasets", {}).get(ds, {}).get("strategies", {})})
        metrics = []
        for key, label in COMPARE_METRICS:
            column = next((c for c in tables.COLUMNS if c.key == key), None)
            decimals = column.decimals if column else 3
            lower = column.lower_is_better if column else True
            grid = {}
            for v in versions:
                entry = v.get("datasets", {}).get(ds, {})
                values = [entry.get("strategies", {}).get(n, {}).get(key) for n in names]
                best = tables.mark_best(values, lower, decimals)
                for n, value, is_best in zip(names, values, best):
                    if n in entry.get("strategies", {}):    # else not evaluated in that version: no cell
                        grid[(n, v["folder"])] = {"value": value, "best": is_best, "winner": entry.get("winner") == n}
            metrics.append({"key": key, "label": label, "decimals": decimals, "lower": lower, "grid": grid})
        datasets.append({"name": ds, "strategies": names, "metrics": metrics})
    return {"key_params": list(KEY_PARAMS), "other_params": [k for k in differing if k not in key_names],
            "differing": differing, "datasets": datasets}


# ---------------------------------------------------------------- rendering

def _fmt(value: Any, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float) and np.isinf(value):
        return "inf"
    return f"{value:.{decimals}f}"


def _interval(cell: tables.Cell, decimals: int = 3) -> str:
    """A cell's 95% interval as printed, e.g. "[0.110, 0.131]"; "" when the evaluate stage gave none."""
    if cell.ci_low is None or cell.ci_high is None:
        return ""
    return f"[{cell.ci_low:.{decimals}f}, {cell.ci_high:.{decimals}f}]"


def _pvalue(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "\u2014"
    return f"{value:.2g}"


def _signed(value: float | None, decimals: int = 3) -> str:
    return "" if value is None else f"{value:+.{decimals}f}"


def _seconds(value: Any) -> str:
    if value is None:
        return "\u2014"
    value = float(value)
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def _param(value: Any) -> str:
    """A flattened parameter as text: a JSON list (how `flatten` keeps lists) without its quotes, `[a, b]`
    (the brackets stay: `train.seeds` [0] is seed 0, where 2 is two seeds)."""
    if isinstance(value, str) and value.startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(items, list):
            return "[" + ", ".join(str(i) for i in items) + "]"
    return "\u2014" if value is None else str(value)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["j2"]),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(fmt=_fmt, signed=_signed, seconds=_seconds, label=tables.method_label, interval=_interval,
                       pvalue=_pvalue, param=_param)
    return env


def paper_winner(params: dict, dataset: str, paper: pd.DataFrame) -> str | None:
    """The method the selection rule picks from the paper's own numbers for the dataset a run stands for."""
    paper_ds, _ = tables.paper_dataset(params, dataset)
    if not paper_ds:
        return None
    scores = {m: tables.max_pe({c.key: tables.paper_value(paper, paper_ds, m, c.key) for c in tables.COLUMNS
                                if c.network})
              for m in tables.BASELINES + tables.GCN_VARIANTS}
    return tables.select_method(scores, scores)


def dataset_section(params: dict, dataset: str, metrics: dict, frames: dict, paper: pd.DataFrame,
                    root: Path) -> dict:
    """One dataset's part of the page: its table block, the paper's winner, the figure and the training curves."""
    report_cfg = params.get("report", {})
    names = ordered(metrics[dataset].get("strategies", {}))
    block = tables.build_block(dataset, metrics[dataset], names, paper, params, frame=frames.get(dataset))
    log.info("report: figures for %s", dataset)
    return {
        "name": dataset, "block": block, "strategies": names, "n_test": metrics[dataset].get("n_test"),
        "description": params["data"][dataset].get("description", ""),
        "paper_winner": paper_winner(params, dataset, paper),
        "figure": qualitative_figure(dataset, names, root, int(report_cfg.get("figures_per_dataset", 2)),
                                     int(report_cfg.get("zoom", 4)), block.winner),
        "curves": training_curves(dataset, names, root),
    }


def build_report(params: dict, root: Path = Path("."), version: str | None = None) -> Path:
    """Write reports/<version>/index.html (+ summary.json), reports/index.html and reports/compare.html.

    Returns the path of the version's page.
    """
    root = Path(root)
    version, git = report_identity(params, root, version)
    params = sources.mark_stand_ins(params, root)   # e.g. imagenet downloaded as Imagenette is labelled a stand-in
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    metrics = load_metrics(params, root)
    frames = load_frames(params, root)
    paper = tables.load_paper()
    table_list = tables.build_tables(params, metrics, paper, frames)
    card = run_card(params, metrics, root, version, git)
    datasets = [dataset_section(params, ds, metrics, frames, paper, root) for ds in params["datasets"]]

    reports = root / paths.REPORTS
    record = summary(params, metrics, version, card, created)
    claims = verdicts.verdicts(params, frames)
    record["verdicts"] = claims
    atomic_write_text(reports / version / "summary.json", json.dumps(record, indent=2, default=str))
    if claims:
        atomic_write_text(reports / version / "verdicts.md", verdicts.markdown(claims))
    env = environment()
    benchmarks = published.build_blocks(load_benchmarks(params, root), published.load_published())
    context = {"version": version, "created": created, "tables": table_list, "columns": tables.COLUMNS,
               "benchmarks": benchmarks, "bench_columns": published.COLUMNS, "verdicts": claims,
               "datasets": datasets, "card": card, "alpha": stats.ALPHA,
               "agreement": tables.agreement_rows(params, metrics),
               "paper_columns": [c for c in tables.COLUMNS if c.in_paper], "extra_methods": tables.EXTRA_METHODS,
               "na_notes": tables.na_explanations(metrics), "network_names": tables.NETWORK_NAMES,
               "smoke": landing.is_smoke_run(record), "smoke_banner": landing.SMOKE_BANNER,
               "against_bicubic": landing.bicubic_comparisons(record)}
    out = reports / version / "index.html"
    atomic_write_text(out, env.get_template("report.html.j2").render(**context))
    write_landing_pages(reports, env, created)
    log.info("report: wrote %s, %s and %s", out, reports / "index.html", reports / "compare.html")
    return out


def write_landing_pages(reports: Path, env: jinja2.Environment, created: str) -> None:
    """reports/index.html (the lead version's page, pipeline.reporting.landing) and reports/compare.html, from every
    version found under reports/."""
    versions = list_versions(reports)
    landing_page = landing.landing_context(reports, versions)
    atomic_write_text(reports / "index.html", env.get_template("index.html.j2").render(
        **landing_page, created=created, smoke_banner=landing.SMOKE_BANNER))
    atomic_write_text(reports / "compare.html", env.get_template("compare.html.j2").render(
        versions=landing_page["versions"], comparison=comparison(versions), created=created,
        smoke_banner=landing.SMOKE_BANNER))
