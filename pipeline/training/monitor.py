"""Training you can watch: DVCLive logs of every run, a validation pass every K iterations, the D-wins flag.

Each trained model models/<dataset>/<slug>/seed-<k>/ gets a DVCLive folder ``dvclive/`` beside its
checkpoint (`paths.live_dir`):

- ``plots/metrics/train/<loss>.tsv``: the losses of every main iteration (loss_g, loss_content, ...);
- ``plots/metrics/val/{psnr_y,ssim_y,lpips_alex}.tsv``: the validation pass every `train.validate_every`
  main iterations and at the last one, on the first `train.validate_images` test crops of the dataset
  (sorted by id): PSNR-Y and SSIM-Y (pipeline.evaluation.metrics' batched torch versions, on the training
  device, `crop.scale` pixels shaved) and the calibrated LPIPS of AlexNet (pipeline.evaluation.perceptual;
  skipped, with one warning, when its ImageNet weights are unavailable);
- ``plots/images/val/<id>.png``: the latest SR image of the first few validation crops;
- ``metrics.json``: the latest values (DVCLive's summary).

The validation only reads the generator (eval mode, no gradients, no random numbers), so training
batches, weights and resume are unchanged by it. The run's history (losses and validation rows) is
part of the training checkpoint, so a resumed run rewrites its DVCLive folder from that history:
steps logged after the checkpoint, before the kill, are not duplicated. DVCLive runs with
``save_dvc_exp=False`` and ``dvcyaml=False``: `dvc.yaml` declares the plots (per-dataset overlays
written by `export`), so runs inside `dvc repro` / `dvc exp run` never edit it.

The test crops serve here as a monitoring set only: nothing is selected on them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import paths
from pipeline.data import imageset
from pipeline.evaluation import metrics
from pipeline.fileio import atomic_write_text, read_json

log = logging.getLogger(__name__)

VALIDATION_COLUMNS = ("val_psnr_y", "val_ssim_y", "val_lpips_alex")
SAMPLE_IMAGES = 3           # SR samples logged as images at each validation pass
D_WINS_LOSS = 1e-3          # loss_d below this on average over the last D_WINS_SHARE of iterations...
D_WINS_SHARE = 0.1          # ...means the discriminator won outright: the adversarial signal vanished
CURVES = ("loss_g",) + VALIDATION_COLUMNS   # the per-dataset overlays of `dvc plots` (plots/curves/<ds>/)


# ---------------------------------------------------------------- the validation set

@dataclass
class ValidationSet:
    """The first N test crops of a dataset and the networks scoring them (built once per dataset).

    `lpips_alex` is the calibrated AlexNet LPIPS net, None when its weights are unavailable (then
    `lpips_reason` says why).
    """

    lr: torch.Tensor                 # uint8 (N,3,h,w)
    hr: torch.Tensor                 # uint8 (N,3,H,W)
    ids: list[str]
    scale: int
    device: torch.device
    lpips_alex: nn.Module | None = None
    lpips_reason: str | None = None
    hr_features: list[torch.Tensor] = field(default_factory=list)

    @torch.no_grad()
    def score(self, generator: nn.Module) -> tuple[dict[str, float | None], np.ndarray]:
        """Mean val_psnr_y, val_ssim_y, val_lpips_alex of the generator's SR images, and the SR images (N,H,W,3).

        The generator is run in eval mode (BatchNorm on running statistics, as at test time) and put
        back in its previous mode; the SR images are scored as 8-bit images, like the evaluate stage.
        """
        was_training = generator.training
        generator.eval()
        try:
            sr_u8 = imageset.from_unit(generator(imageset.to_unit(self.lr).to(self.device)).float().cpu())
        finally:
            generator.train(was_training)
        sr_device, hr_device = sr_u8.to(self.device), self.hr.to(self.device)
        psnr_y = metrics.batch_psnr_y(sr_device, hr_device, self.scale).clamp(max=metrics.PSNR_CAP)
        values: dict[str, float | None] = {
            "val_psnr_y": float(psnr_y.mean()),
            "val_ssim_y": float(metrics.batch_ssim_y(sr_device, hr_device, self.scale).mean()),
            "val_lpips_alex": None,
        }
        if self.lpips_alex is not None:
            net = self.lpips_alex
            _, calibrated = net.distances(net.features(imageset.to_unit(sr_u8).to(self.device)), self.hr_features)
            values["val_lpips_alex"] = float(calibrated.mean())
        return values, sr_u8.permute(0, 2, 3, 1).numpy()


def validation_set(params: dict, dataset: str, root: Path, device: torch.device) -> ValidationSet | None:
    """The validation set of `dataset`, or None when validation is off or the dataset has no test crops.

    The LPIPS net is built under a forked RNG: lpips initialises layers randomly before the ImageNet
    weights overwrite them, and training must not see that draw.
    """
    train = params["train"]
    n = int(train.get("validate_images", 0))
    if int(train.get("validate_every", 0)) <= 0 or n <= 0:
        return None
    manifest = imageset.read_manifest(dataset, root)
    if not (manifest["split"] == "test").any():
        log.info("%s: no test crops, no validation during training", dataset)
        return None
    lr, hr, ids = imageset.load_pairs(dataset, "test", root)
    out = ValidationSet(lr[:n], hr[:n], ids[:n], int(params["crop"]["scale"]), device)
    from pipeline.evaluation import perceptual  # late import: lpips is only needed when validating
    from pipeline.nets import weights

    order = params.get("eval", {}).get("weights_order", weights.DEFAULT_ORDER)
    record = weights.read_manifest(root).get(weights.EVAL_BACKBONES["alex"])
    with torch.random.fork_rng(devices=[]):
        if record is not None and not record.get("available", True):
            reason = record.get("reason", "recorded unavailable by the weights stage")  # every source was tried
            nets, status = {}, {"alex": {"available": False, "reason": reason}}
        else:
            nets, status = perceptual.load_networks(["alex"], order, root, device)
    if "alex" in nets:
        out.lpips_alex = nets["alex"]
        out.hr_features = out.lpips_alex.features(imageset.to_unit(out.hr).to(device))
    else:
        out.lpips_reason = status["alex"].get("reason")
        log.warning("%s: validation without LPIPS (AlexNet weights unavailable: %s)", dataset, out.lpips_reason)
    return out


def validation_steps(iterations: int, every: int) -> list[int]:
    """The main iterations validated: every `every`-th and the last (none when every is 0)."""
    if every <= 0 or iterations <= 0:
        return []
    return sorted(set(range(every, iterations + 1, every)) | {iterations})


# ---------------------------------------------------------------- one run

class Monitor:
    """The DVCLive log of one run (models/<ds>/<slug>/seed-<k>/dvclive/) and its validation history.

    `history` is (loss rows, validation rows) from a checkpoint: the DVCLive folder is rewritten from
    it, so a resumed run holds each step once. `validation` None = losses only.
    """

    def __init__(self, out_dir: Path, iterations: int, every: int, validation: ValidationSet | None,
                 rows: list[dict] | None = None, validation_rows: list[dict] | None = None) -> None:
        start = time.perf_counter()
        from dvclive import Live  # late import: dvclive pulls in dvc

        self.seconds = 0.0  # wall time spent monitoring (DVCLive and validation), for config.json
        self.validation = validation if every > 0 else None
        self.steps = set(validation_steps(iterations, every)) if self.validation is not None else set()
        self.rows: list[dict] = list(validation_rows or [])
        with contextlib.redirect_stdout(io.StringIO()):
            self.live = Live(dir=str(paths.live_dir(out_dir)), resume=False, save_dvc_exp=False, dvcyaml=False,
                             report=None)
        for row in rows or []:
            self.log_losses(row["iteration"], row)
        for row in self.rows:
            self._log_validation(row)
        self.live.make_summary()
        self.seconds += time.perf_counter() - start

    def log_losses(self, iteration: int, values: dict) -> None:
        """One main iteration's losses, under train/ (step = main iteration)."""
        start = time.perf_counter()
        self.live.step = int(iteration)
        for key, value in values.items():
            if key.startswith("loss"):
                self.live.log_metric(f"train/{key}", float(value))
        self.seconds += time.perf_counter() - start

    def due(self, iteration: int) -> bool:
        return iteration in self.steps

    def validate(self, iteration: int, generator: nn.Module) -> dict:
        """Score the generator on the validation set, log the values and a few SR images."""
        start = time.perf_counter()
        values, sr = self.validation.score(generator)
        row = {"iteration": int(iteration), **values}
        self.rows.append(row)
        self._log_validation(row)
        for image, image_id in zip(sr[:SAMPLE_IMAGES], self.validation.ids):
            self.live.log_image(f"val/{image_id}.png", image)
        self.live.make_summary()
        self.seconds += time.perf_counter() - start
        return row

    def _log_validation(self, row: dict) -> None:
        self.live.step = int(row["iteration"])
        for key in VALIDATION_COLUMNS:
            if row.get(key) is not None:
                self.live.log_metric(f"val/{key.removeprefix('val_')}", float(row[key]))

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the validation rows so far."""
        return {"validation": list(self.rows)}

    def close(self, out_dir: Path) -> None:
        """Write validation.csv beside log.csv and end the DVCLive run."""
        if self.rows:
            frame = pd.DataFrame(self.rows, columns=["iteration", *VALIDATION_COLUMNS])
            atomic_write_text(out_dir / "validation.csv", frame.to_csv(index=False, float_format="%.6g"))
        else:
            (out_dir / "validation.csv").unlink(missing_ok=True)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            self.live.end()
        self.seconds += time.perf_counter() - start


# ---------------------------------------------------------------- the discriminator-wins flag

def d_wins(rows: list[dict], threshold: float | None = None, share: float | None = None) -> bool:
    """Whether the discriminator won outright: mean loss_d < threshold over the last `share` of iterations.

    Then D separates real from generated images perfectly and the generator's adversarial term
    carries no useful signal. False for runs without a discriminator loss. Defaults: D_WINS_LOSS and
    D_WINS_SHARE.
    """
    threshold = D_WINS_LOSS if threshold is None else threshold
    share = D_WINS_SHARE if share is None else share
    losses = [float(r["loss_d"]) for r in rows if r.get("loss_d") is not None]
    if not losses:
        return False
    window = losses[-max(1, math.ceil(share * len(losses))):]
    return float(np.mean(window)) < threshold


# ---------------------------------------------------------------- per-dataset overlays and metrics

def _read_csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def export(dataset: str, model_dirs: list[Path], root: Path = Path(".")) -> dict:
    """Write the per-dataset overlays plots/curves/<ds>/<curve>.csv and metrics/<ds>-train.json.

    Each overlay is a long table (strategy, seed, iteration, value): dvc.yaml plots it with one line
    per strategy (and seed), so every strategy's curve of a dataset is in one plot. The metrics file
    holds, per strategy, the final validation values (mean over seeds), the number of seeds and of
    seeds whose discriminator won outright. Returns the metrics record.
    """
    curves: dict[str, list[pd.DataFrame]] = {c: [] for c in CURVES}
    per_strategy: dict[str, dict[str, list]] = {}
    for out_dir in model_dirs:
        config = read_json(out_dir / "config.json")
        if not config or config.get("untrained"):
            continue
        name, seed = config["strategy"], int(config.get("seed", 0))
        record = per_strategy.setdefault(name, {k: [] for k in VALIDATION_COLUMNS} | {"d_wins": []})
        record["d_wins"].append(bool(config.get("d_wins", False)))
        losses, validation = _read_csv(out_dir / "log.csv"), _read_csv(out_dir / "validation.csv")
        for curve, frame in (("loss_g", losses),) + tuple((c, validation) for c in VALIDATION_COLUMNS):
            if frame is not None and curve in frame.columns and frame[curve].notna().any():
                part = frame[["iteration", curve]].dropna()
                curves[curve].append(part.assign(strategy=name, seed=seed)[["strategy", "seed", "iteration", curve]])
        for key in VALIDATION_COLUMNS:
            final = validation[key].iloc[-1] if validation is not None and len(validation) else None
            record[key].append(None if final is None or pd.isna(final) else float(final))
    base = root / paths.curves_dir(dataset)
    base.mkdir(parents=True, exist_ok=True)  # a dvc output, present even when no strategy was trained
    for curve, parts in curves.items():
        path = base / f"{curve}.csv"
        if parts:
            atomic_write_text(path, pd.concat(parts).to_csv(index=False, float_format="%.6g"))
        else:
            path.unlink(missing_ok=True)
    out = {"dataset": dataset, "strategies": {}}
    for name, record in per_strategy.items():
        row = {}
        for key in VALIDATION_COLUMNS:
            values = record[key]
            row[key] = float(np.mean(values)) if values and all(v is not None for v in values) else None
        row["n_seeds"] = len(record["d_wins"])
        row["d_wins_seeds"] = int(sum(record["d_wins"]))
        out["strategies"][name] = row
    atomic_write_text(root / paths.train_metrics_path(dataset), json.dumps(out, indent=2))
    return out
