"""Training you can watch: DVCLive logs, the validation pass, resume without duplicates, the D-wins flag."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline import paths
from pipeline.config import load_params, validate
from pipeline.data import imageset
from pipeline.errors import ConfigError
from pipeline.nets import weights
from pipeline.reporting import report
from pipeline.training import monitor
from test_train import DATASET, SCALE, tiny_params  # the training tests' tiny networks

REPO = Path(__file__).resolve().parents[1]
HR = 32      # SSIM-Y's 11x11 window needs HR - 2 * scale >= 11 pixels
N_TRAIN, N_TEST = 6, 3


def write_crops(root: Path, train: bool = True, test: bool = True, seed: int = 0) -> None:
    """A tiny crops dataset in the crop stage's layout: smooth random colour fields and their area-downscaled LR."""
    rng = np.random.default_rng(seed)
    base = root / paths.crops_dir(DATASET)
    rows = []
    for split, prefix, n in (("train", "", N_TRAIN if train else 0), ("test", "t", N_TEST if test else 0)):
        for i in range(n):
            hr = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (HR, HR), interpolation=cv2.INTER_CUBIC)
            lr = cv2.resize(hr, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_AREA)
            image_id = f"{prefix}{i:04d}"
            for kind, image in (("hr", hr), ("lr", lr)):
                (base / split / kind).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(base / split / kind / f"{image_id}.png"), image)
            rows.append({"id": image_id, "split": split, "source": "synthetic", "x": 0, "y": 0, "size": HR,
                         "hr": f"{split}/hr/{image_id}.png", "lr": f"{split}/lr/{image_id}.png"})
    pd.DataFrame(rows, columns=list(imageset.MANIFEST_COLUMNS)).to_csv(base / "manifest.csv", index=False)


def project(root: Path) -> Path:
    write_crops(root)
    return root


def watched_params(**train) -> dict:
    """The training tests' tiny run, validated every 3 of 7 iterations on 2 test crops; weights from the cache only."""
    params = tiny_params(**{"iterations": 7, "checkpoint_every": 2, "validate_every": 3, "validate_images": 2,
                            **train})
    params["crop"]["hr_size"] = HR
    params["eval"]["weights_order"] = ["cache"]
    return params


def tsv(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(paths.live_dir(folder) / "plots" / "metrics" / f"{name}.tsv", sep="\t")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Bit-exact comparisons: one torch thread (conftest.one_torch_thread)."""


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("key,value,fragment", [("validate_every", -1, "integer >= 0"),
                                                ("validate_every", 2.5, "integer >= 0"),
                                                ("validate_images", 0, "positive integer")])
def test_config_rejects_bad_validation_settings(key, value, fragment):
    params = load_params(REPO / "params.yaml")
    params["train"][key] = value
    with pytest.raises(ConfigError, match=rf"train\.{key}: must be an? .*{fragment}"):
        validate(params)


def test_validation_steps_every_k_and_the_last():
    assert monitor.validation_steps(7, 3) == [3, 6, 7]
    assert monitor.validation_steps(6, 3) == [3, 6]
    assert monitor.validation_steps(30, 10) == [10, 20, 30]
    assert monitor.validation_steps(7, 0) == []


# ---------------------------------------------------------------- DVCLive files of a run

def test_run_writes_dvclive_losses_validation_and_images(tmp_path):
    root = project(tmp_path)
    folder = train_dataset_one(root, "adv")
    losses = tsv(folder, "train/loss_g")
    assert list(losses["step"]) == list(range(1, 8))        # every main iteration, once
    log = pd.read_csv(folder / "log.csv")
    np.testing.assert_allclose(losses["loss_g"], log["loss_g"], rtol=1e-5)
    assert list(tsv(folder, "train/loss_d")["step"]) == list(range(1, 8))
    for name in ("val/psnr_y", "val/ssim_y"):
        assert list(tsv(folder, name)["step"]) == [3, 6, 7]  # every 3 iterations and the last
    # AlexNet weights are not in this project's cache: LPIPS is skipped, the other metrics are not
    assert not (paths.live_dir(folder) / "plots" / "metrics" / "val" / "lpips_alex.tsv").exists()
    validation = pd.read_csv(folder / "validation.csv")
    assert list(validation["iteration"]) == [3, 6, 7] and validation["val_lpips_alex"].isna().all()
    summary = json.loads((paths.live_dir(folder) / "metrics.json").read_text())
    assert summary["step"] == 7 and summary["val"]["psnr_y"] == pytest.approx(validation["val_psnr_y"].iloc[-1], rel=1e-5)
    images = sorted(p.name for p in (paths.live_dir(folder) / "plots" / "images" / "val").iterdir())
    assert images == ["t0000.png", "t0001.png"]               # validate_images = 2 (fewer than SAMPLE_IMAGES)
    assert cv2.imread(str(paths.live_dir(folder) / "plots" / "images" / "val" / "t0000.png")).shape == (HR, HR, 3)
    assert not (paths.live_dir(folder) / "dvc.yaml").exists() and not (root / "dvc.yaml").exists()


def train_dataset_one(root: Path, name: str, **train) -> Path:
    from pipeline.training.train import train_dataset

    return train_dataset(watched_params(**train), DATASET, [name], root)[0]


def test_validation_scores_the_generator_as_the_evaluate_stage_would(tmp_path):
    """val_psnr_y / val_ssim_y are the pipeline.evaluation.metrics values of the saved generator's 8-bit SR images."""
    from pipeline.nets.networks import load_sr_model

    root = project(tmp_path)
    folder = train_dataset_one(root, "mse")
    lr, hr, _ = imageset.load_pairs(DATASET, "test", root)
    model = load_sr_model(folder)
    with torch.no_grad():
        sr = imageset.from_unit(model(imageset.to_unit(lr[:2]))).permute(0, 2, 3, 1).numpy()
    hr = hr[:2].permute(0, 2, 3, 1).numpy()
    last = pd.read_csv(folder / "validation.csv").iloc[-1]
    assert last["val_psnr_y"] == pytest.approx(np.mean([monitor.metrics.psnr_y(s, h, SCALE) for s, h in zip(sr, hr)]),
                                               rel=1e-5)
    assert last["val_ssim_y"] == pytest.approx(np.mean([monitor.metrics.ssim_y(s, h, SCALE) for s, h in zip(sr, hr)]),
                                               rel=1e-5)


def test_validation_off_and_no_test_crops_log_losses_only(tmp_path):
    root = project(tmp_path / "off")
    folder = train_dataset_one(root, "mse", validate_every=0)
    assert len(tsv(folder, "train/loss_g")) == 7
    assert not (paths.live_dir(folder) / "plots" / "metrics" / "val").exists()
    assert not (folder / "validation.csv").exists()
    bare = tmp_path / "bare"
    write_crops(bare, test=False)                          # train crops only: nothing to validate on
    folder = train_dataset_one(bare, "mse")
    assert not (folder / "validation.csv").exists() and len(tsv(folder, "train/loss_g")) == 7


def test_lpips_alex_logged_when_weights_are_available(tmp_path, weights_root):
    weights.resolve("alexnet", ["cache", "registry"], weights_root)
    root = project(tmp_path)
    (root / "weights").symlink_to(weights_root / "weights", target_is_directory=True)
    folder = train_dataset_one(root, "mse")
    lpips_tsv = tsv(folder, "val/lpips_alex")
    assert list(lpips_tsv["step"]) == [3, 6, 7]
    assert ((lpips_tsv["lpips_alex"] > 0) & (lpips_tsv["lpips_alex"] < 2)).all()


# ---------------------------------------------------------------- validation changes nothing, resume duplicates nothing

def test_validation_leaves_training_bit_identical_and_resume_duplicates_no_step(tmp_path):
    from pipeline.training.train import train_dataset

    # the plain path logs each step at once, so a kill leaves steps logged after the last checkpoint
    settings = {"iterations": 9, "checkpoint_every": 4, "fast": "off"}
    plain = project(tmp_path / "plain")
    unwatched = train_dataset(watched_params(validate_every=0, **settings), DATASET, ["adv,rec"], plain)[0]
    whole = train_dataset_one(project(tmp_path / "whole"), "adv,rec", **settings)
    cut_root = project(tmp_path / "cut")
    params = watched_params(**settings)
    # killed after step 7 (validated at 3 and 6, checkpoint at 4): steps 5-7 and validation 6 are logged twice
    # unless the resumed run rewrites its log from the checkpoint
    train_dataset(params, DATASET, ["adv,rec"], cut_root, stop_after=7)
    cut = cut_root / paths.model_dir(DATASET, "adv+rec", 0)
    assert list(tsv(cut, "train/loss_g")["step"]) == list(range(1, 8))
    assert list(tsv(cut, "val/psnr_y")["step"]) == [3, 6]
    resumed = train_dataset(params, DATASET, ["adv,rec"], cut_root)[0]
    weights_of = lambda f: torch.load(f / "generator.pt", weights_only=True)["state_dict"]
    for other in (unwatched, resumed):
        assert all(torch.equal(weights_of(whole)[k], weights_of(other)[k]) for k in weights_of(whole))
    for name in ("train/loss_g", "train/loss_d", "train/loss_rec", "val/psnr_y", "val/ssim_y"):
        pd.testing.assert_frame_equal(tsv(resumed, name), tsv(whole, name))
    assert list(tsv(resumed, "train/loss_g")["step"]) == list(range(1, 10))
    assert list(tsv(resumed, "val/psnr_y")["step"]) == [3, 6, 9]
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "validation.csv"), pd.read_csv(whole / "validation.csv"))


# ---------------------------------------------------------------- discriminator wins

def rows_with_loss_d(values) -> list[dict]:
    return [{"iteration": i + 1, "loss_g": 1.0, "loss_d": v} for i, v in enumerate(values)]


def test_d_wins_when_loss_d_collapses_over_the_last_tenth():
    collapsing = np.r_[np.linspace(0.69, 0.01, 90), np.full(10, 1e-5)]
    assert monitor.d_wins(rows_with_loss_d(collapsing))
    assert not monitor.d_wins(rows_with_loss_d(np.full(100, 0.6)))        # a contest
    late_recovery = np.r_[np.full(90, 1e-5), np.full(10, 0.3)]            # collapsed, then D lost ground again
    assert not monitor.d_wins(rows_with_loss_d(late_recovery))
    assert not monitor.d_wins([{"iteration": 1, "loss_g": 0.1}])           # no discriminator


def test_d_wins_flag_in_config_and_warning(tmp_path, caplog, monkeypatch):
    """The training loop writes d_wins into config.json and warns; a tiny run's D never wins at 1e-3, so the
    flagged case raises the threshold above the run's loss_d (about ln 2)."""
    fair = train_dataset_one(project(tmp_path / "fair"), "adv", validate_every=0)
    assert json.loads((fair / "config.json").read_text())["d_wins"] is False
    mse = train_dataset_one(project(tmp_path / "mse"), "mse", validate_every=0)
    assert "d_wins" not in json.loads((mse / "config.json").read_text())
    monkeypatch.setattr(monitor, "D_WINS_LOSS", 10.0)
    with caplog.at_level("WARNING"):
        won = train_dataset_one(project(tmp_path / "won"), "adv", validate_every=0)
    assert json.loads((won / "config.json").read_text())["d_wins"] is True
    assert any("discriminator won outright" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- per-dataset overlays, metrics, dvc.yaml, report

def test_export_overlays_every_strategy_and_writes_train_metrics(tmp_path):
    from pipeline.training.train import train_dataset

    root = project(tmp_path)
    folders = train_dataset(watched_params(seeds=2), DATASET, ["mse", "adv", "bicubic"], root)
    curves = root / paths.curves_dir(DATASET)
    loss_g = pd.read_csv(curves / "loss_g.csv")
    assert list(loss_g.columns) == ["strategy", "seed", "iteration", "loss_g"]   # y = the last column
    assert set(loss_g["strategy"]) == {"mse", "adv"} and set(loss_g["seed"]) == {0, 1}
    assert len(loss_g) == 2 * 2 * 7
    psnr = pd.read_csv(curves / "val_psnr_y.csv")
    assert len(psnr) == 2 * 2 * 3 and list(psnr.columns)[-1] == "val_psnr_y"
    assert not (curves / "val_lpips_alex.csv").exists()
    record = json.loads((root / paths.train_metrics_path(DATASET)).read_text())
    assert set(record["strategies"]) == {"mse", "adv"}
    for name in ("mse", "adv"):
        finals = [pd.read_csv(root / paths.model_dir(DATASET, name, s) / "validation.csv")["val_psnr_y"].iloc[-1]
                  for s in (0, 1)]
        row = record["strategies"][name]
        assert row["val_psnr_y"] == pytest.approx(np.mean(finals), rel=1e-5)
        assert row["val_lpips_alex"] is None and row["n_seeds"] == 2
        assert set(row) == {"val_psnr_y", "val_ssim_y", "val_lpips_alex", "n_seeds", "d_wins_seeds"}
    assert len(folders) == 6


def test_dvc_yaml_declares_the_training_plots_and_metrics():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    train = spec["stages"]["train"]["do"]
    plots = {k: v for entry in train["plots"] for k, v in entry.items()}
    curves = plots["plots/curves/${item}"]
    assert curves["x"] == "iteration" and curves["cache"] is False and "y" not in curves   # y: each file's last column
    template = json.loads((REPO / curves["template"]).read_text())
    assert template["encoding"]["color"]["field"] == "strategy"
    assert "<DVC_METRIC_DATA>" in json.dumps(template)
    # the training summary is an uncached output, not a dvc metric: `dvc metrics show` lists the evaluation only
    outs = {k: v for entry in train["outs"] if isinstance(entry, dict) for k, v in entry.items()}
    assert outs["metrics/${item}-train.json"]["cache"] is False and "metrics" not in train
    assert "pipeline/training/monitor.py" in train["deps"] and "eval.weights_order" in train["params"]
    assert set(monitor.CURVES) == {"loss_g", "val_psnr_y", "val_ssim_y", "val_lpips_alex"}


def test_report_shows_validation_curves_and_d_wins(tmp_path):
    from test_report import default_params, make_workspace  # the report tests' synthetic workspace

    params = default_params()
    make_workspace(tmp_path, params, seeds=(0,))
    natural = params["datasets"][0]
    for i, name in enumerate(("mse", "dis")):      # validation rows as pipeline.training.monitor writes them
        pd.DataFrame({"iteration": [10, 20, 30], "val_psnr_y": [20.0 + i, 21.0 + i, 22.0 + i],
                      "val_ssim_y": [0.5, 0.55, 0.6], "val_lpips_alex": [0.5, 0.45, 0.4]}).to_csv(
            tmp_path / paths.model_dir(natural, name, 0) / "validation.csv", index=False)
    config_path = tmp_path / paths.model_dir(natural, "adv", 0) / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "d_wins": True}))

    curves = report.training_curves(natural, ["mse", "dis", "adv"], tmp_path)
    assert curves["validation"] == ["mse", "dis"] and curves["d_wins"] == ["adv"]
    assert curves["validation_metrics"] == ["val_psnr_y", "val_ssim_y", "val_lpips_alex"]
    html = report.build_report(params, tmp_path, version="v").read_text()
    section = html[html.index('<section id="curves">'):html.index('<section id="run-card">')]
    blocks = section.split("<h3>")[1:]
    assert "validation metrics over iterations on " + natural in blocks[0]
    assert "<strong>adv</strong>: discriminator won outright: adversarial signal vanished" in blocks[0]
    for block in blocks[1:]:                       # the other datasets have no validation rows, and no D win
        assert "No validation during training" in block and "won outright" not in block


def test_one_job_of_many_leaves_the_overlays_to_the_curves_rule(tmp_path):
    from pipeline.training.train import export_monitoring, train_dataset

    root = project(tmp_path)
    train_dataset(watched_params(validate_every=0), DATASET, ["mse"], root, curves=False)
    assert not (root / paths.curves_dir(DATASET)).exists() and not (root / paths.train_metrics_path(DATASET)).exists()
    record = export_monitoring(watched_params(), DATASET, root)       # `stages/train.py --curves-only`
    assert set(record["strategies"]) == {"mse"} and record["strategies"]["mse"]["val_psnr_y"] is None
    assert set(pd.read_csv(root / paths.curves_dir(DATASET) / "loss_g.csv")["strategy"]) == {"mse"}
