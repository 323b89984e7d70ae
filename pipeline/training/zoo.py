"""The model zoo: trained runs committed to the repository, zoo/<folder>/<slug>/seed-<k>/.

The folder is the dataset's name, or a profile's own name when one dataset is trained with several profiles
(zoo/photo/ beside the campaign's zoo/kodak24/, zoo/paper-aerial/ beside zoo/sample-aerial/); a run's
config.json names its dataset and inputs hash, so nothing depends on the folder's name.

Each run folder holds generator.pt with float16 weights (`half_generator`), config.json (the inputs hash,
precision, device, timings), log.csv.gz, validation.csv and pretrain_log.csv. Runs arrive from the CPU
campaign (pipeline.campaign) and from the GPU bundle (pipeline.lease --import). The train stage takes a
zoo run instead of training when its inputs hash matches (`take`), so `dvc repro` in a fresh clone
evaluates the zoo's models without retraining; `restore_run` rebuilds a models/ folder from a zoo run.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import tempfile
from pathlib import Path

import torch

from pipeline import paths
from pipeline.fileio import atomic_write_bytes, atomic_write_text, sha256_bytes

ZOO = Path("zoo")
RUN_FILES = ("config.json", "log.csv", "validation.csv", "pretrain_log.csv")


def is_folder_name(name: object) -> bool:
    """Whether a plan's `zoo:` value can name a folder under zoo/ (letters, digits, - and _)."""
    return str(name).replace("-", "").replace("_", "").isalnum()


def run_folder(root: Path, folder: str, slug: str, seed: int) -> Path:
    """zoo/<folder>/<slug>/seed-<k>/ under `root`."""
    return Path(root) / ZOO / folder / slug / f"seed-{seed}"


def holds(folder: Path, digest: str) -> bool:
    """The zoo folder holds a completed run of these inputs (config.json says so, the generator is there)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return bool(config.get("completed") and config.get("inputs_hash") == digest and (folder / "generator.pt").is_file())


def take(root: Path, dataset: str, slug: str, seed: int, digest: str) -> Path | None:
    """models/<dataset>/<slug>/seed-<k>/ rebuilt from the zoo when a zoo folder holds this run's inputs, else None.

    zoo/<dataset>/ is looked at first, then every other folder (a profile's own): the inputs hash covers the
    dataset's crops, so only a run of these very inputs matches."""
    zoo = Path(root) / ZOO
    others = sorted(p.name for p in zoo.iterdir() if p.is_dir() and p.name != dataset) if zoo.is_dir() else []
    for name in [dataset, *others]:
        folder = run_folder(root, name, slug, seed)
        if holds(folder, digest):
            return restore_run(Path(root), folder)
    return None


def half_generator(path: Path) -> tuple[bytes, str]:
    """generator.pt with float16 weights (a tensor that float16 cannot hold stays float32), and the precision."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    state, kept = {}, []
    for key, value in saved["state_dict"].items():
        half = value.half() if value.is_floating_point() else value
        if value.is_floating_point() and not torch.isfinite(half).all():
            half, _ = value, kept.append(key)
        state[key] = half
    buffer = io.BytesIO()
    torch.save({"arch": saved["arch"], "state_dict": state}, buffer)
    precision = "float16" + (f" (float32: {', '.join(kept)})" if kept else "")
    return buffer.getvalue(), precision


def write_zoo(run_dir: Path, dest: Path) -> None:
    """The committed copy of a run: float16 generator.pt, config.json, log.csv.gz, validation.csv."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(run_dir / "generator.pt", dest / "generator.pt")
    for name in ("validation.csv", "pretrain_log.csv"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "log.csv").is_file():
        atomic_write_bytes(dest / "log.csv.gz", gzip.compress((run_dir / "log.csv").read_bytes(), mtime=0))
    shutil.copy2(run_dir / "config.json", dest / "config.json")


def write_model(run_dir: Path, dest: Path, extra: dict) -> None:
    """A stored run (bundle or zoo) as the trainer writes it: generator.pt in float32, config.json, logs, DVCLive folder."""
    from pipeline.nets.networks import Generator, save_generator

    saved = torch.load(run_dir / "generator.pt", map_location="cpu", weights_only=True)
    generator = Generator(**saved["arch"])
    generator.load_state_dict(saved["state_dict"])   # float16 values into the float32 parameters
    dest.mkdir(parents=True, exist_ok=True)
    for stale in ("checkpoint.pt", "config.json"):
        (dest / stale).unlink(missing_ok=True)       # config.json last: the folder is complete only at the end
    save_generator(generator, saved["arch"], dest / "generator.pt")
    for name in RUN_FILES[1:]:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if paths.live_dir(run_dir).is_dir():
        shutil.rmtree(paths.live_dir(dest), ignore_errors=True)
        shutil.copytree(paths.live_dir(run_dir), paths.live_dir(dest))
    config = {**json.loads((run_dir / "config.json").read_text()), **extra}
    atomic_write_text(dest / "config.json", json.dumps(config, indent=2))


def restore_run(root: Path, folder: Path, rebuild_dvclive: bool = True) -> Path:
    """One zoo run rebuilt into models/<dataset>/<slug>/seed-<k>/ (float32 generator, logs, DVCLive folder); the
    dataset is the one config.json names, whatever the zoo folder is called."""
    config = json.loads((folder / "config.json").read_text())
    dataset = config.get("dataset") or folder.parent.parent.name
    slug, seed = folder.parent.name, int(folder.name.removeprefix("seed-"))
    dest = Path(root) / paths.model_dir(dataset, slug, seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".zoo-restore-", dir=dest.parent) as tmp:
        staged = Path(tmp)
        shutil.copy2(folder / "generator.pt", staged / "generator.pt")
        shutil.copy2(folder / "config.json", staged / "config.json")
        for name in ("validation.csv", "pretrain_log.csv"):
            if (folder / name).is_file():
                shutil.copy2(folder / name, staged / name)
        if (folder / "log.csv.gz").is_file():
            (staged / "log.csv").write_bytes(gzip.decompress((folder / "log.csv.gz").read_bytes()))
        write_model(staged, dest, {})
    if rebuild_dvclive:
        rebuild_live(dest)
    return dest


def restore_from_zoo(root: Path, folder: str, rebuild_dvclive: bool = True) -> list[Path]:
    """models/ rebuilt from the runs of zoo/<folder>/ (a fresh clone: `dvc repro` then retrains nothing)."""
    return [restore_run(Path(root), config_path.parent, rebuild_dvclive)
            for config_path in sorted((Path(root) / ZOO / folder).glob("*/seed-*/config.json"))]


def rebuild_live(model_dir: Path) -> None:
    """The run's DVCLive folder rewritten from log.csv and validation.csv (as a resumed run rewrites it)."""
    import pandas as pd

    from pipeline.training import monitor

    rows = pd.read_csv(model_dir / "log.csv").to_dict("records") if (model_dir / "log.csv").is_file() else []
    val = (pd.read_csv(model_dir / "validation.csv").astype(object).where(lambda f: f.notna(), None).to_dict("records")
           if (model_dir / "validation.csv").is_file() else [])
    config = json.loads((model_dir / "config.json").read_text())
    monitor.Monitor(model_dir, int(config.get("iterations", 0)), 0, None, rows, val).close(model_dir)


def zoo_index(root: Path) -> list[dict]:
    """One row per zoo model, for zoo/index.csv."""
    rows = []
    for config_path in sorted((Path(root) / ZOO).glob("*/*/seed-*/config.json")):
        config = json.loads(config_path.read_text())
        folder = config_path.parent
        validation = folder / "validation.csv"
        last = validation.read_text().strip().splitlines()[-1].split(",") if validation.is_file() else []
        lease, campaign = config.get("lease") or {}, config.get("campaign") or {}
        rows.append({"model": folder.relative_to(root).as_posix(), "dataset": config.get("dataset"),
                     "strategy": config["strategy"], "seed": config["seed"], "iterations": config.get("iterations"),
                     "hr_size": config.get("crop", {}).get("hr_size"),
                     "device": lease.get("gpu") or campaign.get("cpu") or config.get("device"),
                     "precision": config.get("precision", ""), "train_minutes": round(config.get("seconds", 0) / 60, 1),
                     "run_by": f"lease {lease['id']}" if lease.get("id") else
                               (f"campaign {campaign['id']}" if campaign.get("id") else ""),
                     "val_psnr_y": last[1] if len(last) > 1 else "",
                     "generator_sha256": sha256_bytes((folder / "generator.pt").read_bytes())[:16]})
    return rows


def write_zoo_index(root: Path) -> Path:
    """zoo/index.csv: one row per zoo run."""
    rows = zoo_index(root)
    path = Path(root) / ZOO / "index.csv"
    buffer = io.StringIO()
    columns = ["model", "dataset", "strategy", "seed", "iterations", "hr_size", "device", "precision", "train_minutes",
               "run_by", "val_psnr_y", "generator_sha256"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
    return path
