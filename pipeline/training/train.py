"""Train the generator of each strategy (GCN paper 4.3.3) and write models/<dataset>/<slug>/.

A run has up to three phases, counted by one global step so batches, checkpoints and resume
work the same in each:

1. `rec`: for a strategy whose Phi is learned disjointly (`rec`), the auto-encoder is trained
   beforehand on HR crops (train.rec_pretrain iterations, Eq. 2), then frozen.
2. `pretrain_mse`: optional MSE pre-training of the generator (train.pretrain_mse iterations,
   SRGAN 3.2), with its own Adam optimizer.
3. `main`: train.iterations alternating updates of the generator and the extractor
   (discriminator / auto-encoder, when the strategy's `learning` is joint or it is a discriminator
   alone), as `train.d_update` says; the learning rates of both follow torch's MultiStepLR
   (`train.lr_milestones` in main iterations, `train.lr_gamma`; SRGAN: 1e-4, then 1e-5 after 1e5):
   - `separate` (the authors' code, gcn.py `train`): the extractor first, in two steps on one
     mini-batch A: one on the real HR images of A (label 1), then one on F(x_A) (label 0),
     F(x_A) computed with the generator in eval mode (Keras `predict`); so BatchNorm normalises
     real and generated images separately. Then the generator, on a second mini-batch B.
   - `joint`: the generator first, then one extractor step on the real and the (detached)
     generated images of the same mini-batch, real and generated forwarded separately but
     summed into one loss and one Adam step.

The batches of step s are drawn from generators seeded by (train.seed, s) (B from its own
stream), and so are the random horizontal flips (`train.hflip`, the authors' data loader), so a
run resumed from a checkpoint sees exactly the batches an uninterrupted run sees; on CPU the
final weights are bit-identical. Adam uses betas (train.beta1, 0.999); the authors' code calls
Keras `Adam(0.0002, 0.)`, i.e. beta1 = 0 (the paper's "decay of 0"). Losses:

- generator: loss_g = lambda1 * loss_content + lambda2 * loss_adv, loss_content = the weighted sum
  of the strategy's content terms (pipeline.nets.strategies), e.g. mean((Phi(y) - Phi(F(x)))^2) with
  Phi's features times the term's scale, or the DP loss's dynamically weighted sum; loss_adv =
  mean(-log D(F(x))) (the non-saturating form, SRGAN Eq. 6; averaged over the patches of a
  patch discriminator, like the authors' Keras binary cross-entropy), computed from logits;
- discriminator: BCE(D(y), 1) and BCE(D(F(x)), 0); logged loss_d = their mean, as in the
  authors' code;
- reconstruction head: loss_rec = mean((Psi2(Phi(y)) - y)^2) (paper text); with
  train.rec_on_generated also the same error on generated images (authors' code), averaged.
  Each extractor step minimises its discriminator term(s) plus its reconstruction term(s).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pipeline import paths
from pipeline.config import seed_list
from pipeline.data import imageset
from pipeline.device import choose_device
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_bytes, atomic_write_text, sha256_file
from pipeline.nets import strategies as registry
from pipeline.nets.networks import BN_MOMENTUM, Extractor, Generator, save_generator
from pipeline.nets.strategies import BACKBONES, DYNAMIC, DYNAMIC_EPS, Strategy, Term, train_value
from pipeline.training import fast as fast_path
from pipeline.training import monitor, zoo

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
READ_BACK_EVERY = 50  # fast path: loss values are read from the device every this many steps (and at checkpoints)


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the run stopped and its last good checkpoint was kept."""


# ---------------------------------------------------------------- small helpers

MONITOR_KEYS = ("validate_every", "validate_images")  # monitoring only: the weights do not depend on them
OWN_KEYS = ("dp",)  # train sections only some strategies read (Strategy.parameters): hashed only for those


def inputs_hash(strategy: Strategy, params: dict, manifest_sha256: str,
                weights_sha256: Mapping[str, str] | None = None) -> str:
    """The hash of everything a strategy's result depends on; an unchanged hash means no retraining.

    `weights_sha256`: the sha256 of each backbone's ImageNet weights the strategy's loss uses.
    """
    train = {k: v for k, v in params["train"].items()
             if k not in MONITOR_KEYS and (k not in OWN_KEYS or k in strategy.parameters)}
    payload = {"strategy": strategy.definition(), "train": train, "crop": params["crop"],
               "manifest_sha256": manifest_sha256, "weights_sha256": dict(weights_sha256 or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    # stream 0 keeps the original (seed, step) key, so the first batch of a step is unchanged
    key = [seed, step] if stream == 0 else [seed, step, stream]
    state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def batch_indices(n: int, batch_size: int, seed: int, step: int, stream: int = 0) -> torch.Tensor:
    """The mini-batch of global step `step`: a function of (seed, step, stream) only, so resume is exact.

    Stream 0 is the batch of a step; stream 1 the generator's second batch under d_update=separate.
    """
    generator = _generator(seed, step, stream)
    if n >= batch_size:
        return torch.randperm(n, generator=generator)[:batch_size]
    return torch.randint(n, (batch_size,), generator=generator)


FLIP_STREAM = 2


def flip_mask(n: int, seed: int, step: int) -> torch.Tensor:
    """Which of the n images of step `step` are flipped left-right (probability 1/2 each, as the authors)."""
    return torch.rand(n, generator=_generator(seed, step, FLIP_STREAM)) < 0.5


def hflip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The images with those of `mask` mirrored left-right (the LR and HR of a pair get the same mask)."""
    mask = mask.to(images.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(mask, images.flip(-1), images)


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def set_trainable(module: nn.Module | None, flag: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(flag)


# ---------------------------------------------------------------- the networks and their updates

class Trainer:
    """The generator, the extractor network of one strategy, their optimizers and one update of each.

    What is built and trained follows the registry entry: its loss terms, and its `learning`
    (`frozen`: Phi's network gets no optimizer; `disjoint`: it is trained in the `rec` phase, then
    frozen by `freeze_extractor`; `joint`: it is updated in every main iteration; a discriminator
    needed only for the adversarial term is always updated). `backbones` holds the frozen ImageNet
    feature extractors of the backbone terms, keyed by `Term.key` (`vgg19/relu5_4`; see
    `backbone_modules`). `fast` switches on the fast path (pipeline.training.fast: channels_last, fused Adam on
    CUDA, loss values returned as device tensors for a grouped read-back); None = `train.fast`
    (auto: on). `precision` (`bf16` autocast or `fp32`) defaults to pipeline.training.fast.precision: bf16
    on the fast path on CUDA and on CPUs that compute bf16 natively, else fp32. The networks (the shared backbones included) are
    put in the memory format of the chosen path in place. The architecture choices (discriminator
    head, BN on the first blocks, decoder output, BN momentum), `d_update` and the learning-rate
    schedule of the main phase (`lr_milestones`, `lr_gamma`) come from `train` (params.yaml).
    """

    def __init__(self, strategy: Strategy, train: dict, hr_size: int, scale: int,
                 device: torch.device = torch.device("cpu"), backbones: Mapping[str, nn.Module] | None = None,
                 fast: bool | None = None, precision: str | None = None) -> None:
        self.strategy, self.train, self.device = strategy, train, device
        self.fast = fast_path.resolve(train.get("fast", "auto") if fast is None else fast, device)
        self.precision = precision or fast_path.precision(device, self.fast)
        self.defer = self.fast  # losses stay on the device until the loop reads them back (check_finite then)
        self.layer = int(train["feature_layer"])
        self.lambda1 = float(train["lambda1"])
        self.lambda2 = strategy.adversarial_weight(train)
        self.d_update = train.get("d_update", "separate")
        if self.d_update not in ("separate", "joint"):
            raise ValueError(f"train.d_update: invalid value {self.d_update!r}; valid choices: separate, joint")
        gen, disc = train.get("generator", {}), train.get("discriminator", {})
        bn_momentum = float(train.get("bn_momentum", BN_MOMENTUM))
        self.arch = {"blocks": int(gen.get("blocks", 10)), "width": int(gen.get("width", 64)),
                     "upsample": gen.get("upsample", "pixelshuffle"), "scale": int(scale),
                     "bn_momentum": bn_momentum}
        disc_arch = {"image_size": hr_size, "blocks": int(disc.get("blocks", 8)),
                     "width": int(disc.get("width", 64)), "dense": int(disc.get("dense", 1024)),
                     "head": disc.get("head", "patch"), "plain_blocks": int(disc.get("plain_blocks", 2)),
                     "decoder_output": disc.get("decoder_output", "tanh"), "bn_momentum": bn_momentum}
        torch.manual_seed(int(train.get("seed", 0)))
        self.generator = Generator(**self.arch).to(device)
        betas = (float(train["beta1"]), 0.999)  # the authors' Keras Adam(0.0002, 0.): beta1 = 0
        adam = lambda params: fast_path.adam(params, float(train["lr"]), betas, device, self.fast)
        self.opt_g = adam(self.generator.parameters())
        self.opt_pre = adam(self.generator.parameters()) if int(train.get("pretrain_mse", 0)) else None

        # The extractor network: Phi's (random / auto-encoder / discriminator) and/or the discriminator.
        self.extractor: Extractor | None = None
        if strategy.needs_extractor:
            self.extractor = Extractor(**disc_arch, discriminator=strategy.needs_discriminator,
                                       decoder=strategy.needs_decoder).to(device)
        frozen = strategy.phi_network and strategy.learning == "frozen"
        self.opt_x = adam(self.extractor.parameters()) if self.extractor is not None and not frozen else None
        self.backbones = {key: module.to(device).eval() for key, module in (backbones or {}).items()}
        for term in strategy.content_terms:
            if term.space in BACKBONES and term.key(train) not in self.backbones:
                raise ValueError(f"strategy {strategy.name} needs the {term.key(train)} feature extractor")
        if frozen:
            self.freeze_extractor()  # P/ran: seeded random weights, never trained
        # SRGAN's recipe lowers the learning rate during the main phase (torch's MultiStepLR)
        milestones, gamma = [int(m) for m in train.get("lr_milestones", [])], float(train.get("lr_gamma", 0.1))
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)
                           for name, opt in (("opt_g", self.opt_g), ("opt_x", self.opt_x))
                           if opt is not None and (name == "opt_g" or self.joint)}
        fast_path.set_memory_format((self.generator, self.extractor, *self.backbones.values()), self.fast)
        self.autocast = fast_path.autocast(device, self.precision)

    @property
    def joint(self) -> bool:
        """Whether the extractor network is updated alternately with the generator in the main phase
        (Eq. 4): Phi learned jointly, or a discriminator that is not Phi."""
        if self.extractor is None:
            return False
        return self.strategy.learning == "joint" or not self.strategy.phi_network

    # -- Phi

    def freeze_extractor(self) -> None:
        """Disjoint / random extractors: fixed weights, eval-mode BN, no gradients."""
        self.extractor.eval()
        set_trainable(self.extractor, False)
        self.opt_x = None

    def features(self, term: Term, images: torch.Tensor) -> torch.Tensor:
        """The features a content term compares: the images, the first extractor blocks, or a backbone layer."""
        if term.space == "pixel":
            features = images
        elif term.space == "extractor":
            features = self.extractor.features(images, self.layer)
        else:
            features = self.backbones[term.key(self.train)](images)
        return features * term.scale if term.scale != 1 else features

    # -- losses

    def content_terms(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each content term's distance between the features of F(x) and y (unweighted), by feature space."""
        values = {}
        for term in self.strategy.content_terms:
            with torch.no_grad():
                target = self.features(term, hr)
            distance = F.mse_loss if term.loss == "mse" else F.l1_loss
            values[term.space] = distance(self.features(term, sr).float(), target.float())
        return values

    def content_loss(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of the content terms.

        A DYNAMIC weight (the DP loss, DP paper Eq. 8-9) is train.dp.k * sg(first term) /
        (sg(this term) + eps): stop-gradient values, so the weighted term always equals k times the
        first term in value while its gradient keeps the direction of the term's own gradient.
        """
        terms = self.strategy.content_terms
        reference = values[terms[0].space]
        total = None
        for term in terms:
            value = values[term.space]
            if term.weight == DYNAMIC:
                k = float(train_value(self.train, "train.dp.k"))
                value = k * reference.detach() / (value.detach() + DYNAMIC_EPS) * value
            elif term.weight != 1:
                value = float(term.weight) * value
            total = value if total is None else total + value
        return total

    def generator_losses(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """F(x) and the generator's losses (tensors with graph; loss_g is the one to minimise).

        Logged: loss_content (the weighted content sum), with several content terms also each
        unweighted term (`loss_<space>`, e.g. loss_vgg19, loss_resnet50), and loss_adv.
        """
        with self.autocast():
            sr = self.generator(lr)
            values = self.content_terms(sr, hr)
            content = self.content_loss(values)
            losses = {"loss_content": content}
            if len(values) > 1:
                losses.update({f"loss_{space}": value for space, value in values.items()})
            total = self.lambda1 * content
            if self.lambda2 > 0:
                adv = F.softplus(-self.extractor.logits(sr).float()).mean()  # = -log D(F(x))
                losses["loss_adv"] = adv
                total = total + self.lambda2 * adv
        losses["loss_g"] = total
        return sr, losses

    def extractor_losses(self, sr: torch.Tensor, hr: torch.Tensor) -> dict:
        """The joint extractor's losses on a real batch and a (detached) generated batch (d_update=joint)."""
        losses = {}
        with self.autocast():
            if self.extractor.head is not None:
                real, fake = self.extractor.logits(hr).float(), self.extractor.logits(sr).float()
                losses["loss_d"] = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            if self.extractor.decoder is not None:
                rec = F.mse_loss(self.extractor.reconstruct(hr).float(), hr.float())
                if self.train.get("rec_on_generated", False):
                    rec = 0.5 * (rec + F.mse_loss(self.extractor.reconstruct(sr).float(), sr.float()))
                losses["loss_rec"] = rec
        return losses

    def extractor_step_losses(self, images: torch.Tensor, real: bool) -> dict:
        """The losses of one d_update=separate extractor step: real HR (label 1) or generated (label 0) images.

        The reconstruction term is on the real images, and on the generated ones too with
        train.rec_on_generated (the authors' code trains both outputs in both steps).
        """
        losses = {}
        with self.autocast():
            if self.extractor.head is not None:
                logits = self.extractor.logits(images).float()
                target = torch.ones_like(logits) if real else torch.zeros_like(logits)
                losses["loss_d"] = F.binary_cross_entropy_with_logits(logits, target)
            if self.extractor.decoder is not None and (real or self.train.get("rec_on_generated", False)):
                losses["loss_rec"] = F.mse_loss(self.extractor.reconstruct(images).float(), images.float())
        return losses

    # -- updates

    def read(self, losses: dict) -> dict:
        """Loss values: floats checked at once (plain path), or detached device tensors (fast path)."""
        if self.defer:
            return {k: v.detach() for k, v in losses.items()}
        return check_finite(losses)

    def step_autoencoder(self, hr: torch.Tensor) -> dict:
        """One update of the `rec` auto-encoder trained beforehand (Eq. 2)."""
        with self.autocast():
            loss = F.mse_loss(self.extractor.reconstruct(hr).float(), hr.float())
        values = self.read({"loss_rec": loss})
        self.opt_x.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_x.step()
        return values

    def step_pretrain(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """One MSE pre-training update of the generator (SRGAN 3.2)."""
        with self.autocast():
            loss = F.mse_loss(self.generator(lr).float(), hr.float())
        values = self.read({"loss_g": loss})
        self.opt_pre.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_pre.step()
        return values

    def generate_for_extractor(self, lr: torch.Tensor) -> torch.Tensor:
        """F(x) for a separate extractor step: no graph, BN on running statistics (Keras `predict`)."""
        self.generator.eval()
        with torch.no_grad(), self.autocast():
            sr = self.generator(lr)
        self.generator.train()
        return sr

    def step_generator(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One generator update with Phi / D fixed; returns F(x) and the loss values."""
        set_trainable(self.extractor, False)  # the generator step must not touch Phi / D
        sr, losses = self.generator_losses(lr, hr)
        values = self.read(losses)
        self.opt_g.zero_grad(set_to_none=True)
        losses["loss_g"].backward()
        self.opt_g.step()
        return sr, values

    def step_extractor_separate(self, lr: torch.Tensor, hr: torch.Tensor) -> dict:
        """Two extractor updates on one batch, real images then generated ones (the authors' order)."""
        sr = self.generate_for_extractor(lr)
        set_trainable(self.extractor, True)
        terms: dict[str, list[torch.Tensor]] = {}
        for images, real in ((hr, True), (sr, False)):
            losses = self.extractor_step_losses(images, real)
            if not losses:
                continue  # a joint auto-encoder without rec_on_generated has nothing to learn from F(x)
            self.opt_x.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            self.opt_x.step()
            for k, v in losses.items():
                terms.setdefault(k, []).append(v.detach())
        return self.read({k: sum(v) / len(v) for k, v in terms.items()})  # loss_d = mean of real and fake

    def step_main(self, lr: torch.Tensor, hr: torch.Tensor,
                  generator_batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        """One alternating update (module docstring).

        `generator_batch` is the (lr, hr) batch B of the generator step under d_update=separate
        (the training loop passes it); None = the same batch (benchmarks time one step so).
        """
        if self.d_update == "separate":
            values = self.step_extractor_separate(lr, hr) if self.joint else {}
            values.update(self.step_generator(*(generator_batch or (lr, hr)))[1])
        else:
            sr, values = self.step_generator(lr, hr)
            if self.joint:
                set_trainable(self.extractor, True)
                x_losses = self.extractor_losses(sr.detach(), hr)
                values.update(self.read(x_losses))
                self.opt_x.zero_grad(set_to_none=True)
                sum(x_losses.values()).backward()
                self.opt_x.step()
        for scheduler in self.schedulers.values():
            scheduler.step()  # one main iteration done: the learning rate for the next one
        return values

    # -- checkpoint state

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, **({"extractor": self.extractor} if self.extractor is not None else {})}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        named = {"opt_g": self.opt_g, "opt_pre": self.opt_pre, "opt_x": self.opt_x}
        return {k: v for k, v in named.items() if v is not None}

    def state_dict(self) -> dict:
        return {"modules": {k: m.state_dict() for k, m in self.modules().items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            if k in state["optimizers"]:  # opt_x is gone once the rec auto-encoder is frozen
                o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])


def check_finite(losses: dict) -> dict:
    """Loss values as floats; a NaN/inf raises at once (the caller adds where the checkpoint is)."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    for k, v in values.items():
        if not math.isfinite(v):
            raise TrainingDiverged(f"{k} became {v}")
    return values


def read_back(pending: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """The fast path's deferred loss tensors of several steps as floats, with one device-to-host copy.

    Raises TrainingDiverged at the first non-finite value, its step in `.step`.
    """
    tensors = [v.float().reshape(()) for _, losses in pending for v in losses.values()]
    flat = iter(torch.stack(tensors).tolist() if tensors else [])
    ready = []
    for step, losses in pending:
        values = {k: next(flat) for k in losses}
        for k, v in values.items():
            if not math.isfinite(v):
                err = TrainingDiverged(f"{k} became {v}")
                err.step = step
                raise err
        ready.append((step, values))
    return ready


# ---------------------------------------------------------------- one strategy

def phases(strategy: Strategy, train: dict) -> list[tuple[str, int]]:
    """(phase, iterations) in order; global steps run through them (`rec` only for disjoint learning)."""
    rec = int(train.get("rec_pretrain", 0)) if strategy.learning == "disjoint" else 0
    return [("rec", rec), ("pretrain_mse", int(train.get("pretrain_mse", 0))), ("main", int(train["iterations"]))]


def main_columns(strategy: Strategy, trainer: Trainer) -> list[str]:
    columns = ["iteration", "loss_g", "loss_content"]
    if len(strategy.content_terms) > 1:
        columns += [f"loss_{t.space}" for t in strategy.content_terms]
    if trainer.lambda2 > 0:
        columns.append("loss_adv")
    if trainer.joint:
        columns += [c for c, head in (("loss_d", trainer.extractor.head), ("loss_rec", trainer.extractor.decoder))
                    if head is not None]
    return columns


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def backbone_modules(strategy: Strategy, train: dict, weights: Mapping[str, tuple[dict, dict]]) -> dict[str, nn.Module]:
    """The frozen feature extractors of a strategy's backbone terms, keyed by `Term.key` (`vgg19/conv5_4`),
    from `weights`: network -> (state_dict, record) as pipeline.nets.weights.resolve returns them."""
    from pipeline.nets import weights as backbone_weights  # late import: only the backbone losses need it

    modules = {}
    for term in strategy.content_terms:
        if term.space in BACKBONES:
            state, record = weights[term.space]
            modules[term.key(train)] = backbone_weights.backbone_features(
                term.space, term.layer_name(train), state, record["input_convention"])
    return modules


@dataclass
class Progress:
    """What a run has done so far, kept in its checkpoint so a resumed run continues exactly."""

    step: int = 0                                       # global step (all phases)
    rows: list = field(default_factory=list)            # main-phase losses, one dict per iteration
    pre_rows: list = field(default_factory=list)        # rec / pretrain_mse losses
    seconds: dict = field(default_factory=lambda: {"rec": 0.0, "pretrain_mse": 0.0, "main": 0.0})
    monitor: dict = field(default_factory=dict)         # the monitor's state (validation rows)


def run_record(strategy: Strategy, params: dict, dataset: str, manifest_sha256: str,
               weights: Mapping[str, tuple[dict, dict]]) -> dict:
    """config.json's description of a run (strategy, data, parameters, backbone weights) with its inputs hash.

    Raises ValueError when `weights` lacks a backbone the strategy's loss uses (see loss_weights).
    """
    missing = [network for network in strategy.backbones if network not in weights]
    if missing:
        raise ValueError(f"strategy {strategy.name} needs the weights of {', '.join(missing)} (see loss_weights)")
    records = [weights[network][1] for network in strategy.backbones]
    digest = inputs_hash(strategy, params, manifest_sha256,
                         {network: record["sha256"] for network, record in zip(strategy.backbones, records)})
    train = params["train"]
    record = {"strategy": strategy.name, "slug": registry.slug(strategy.name), "dataset": dataset,
              "seed": int(train.get("seed", 0)), "description": strategy.description,
              "definition": strategy.definition(), "inputs_hash": digest, "manifest_sha256": manifest_sha256,
              "scale": int(params["crop"]["scale"]), "crop": params["crop"], "train": train}
    if records:
        record["weights"] = records
    return record


def check_pairs(dataset: str, data: tuple[torch.Tensor, torch.Tensor], scale: int) -> int:
    """The HR crop size of the training pairs; a UserError when LR and HR sizes disagree with the scale."""
    lr_all, hr_all = data
    hr_size = int(hr_all.shape[-1])
    if hr_size != int(lr_all.shape[-1]) * scale:
        raise UserError(f"dataset {dataset!r}: HR crops of {hr_size} px and LR crops of {lr_all.shape[-1]} px do not "
                        f"match crop.scale {scale}; rerun the crop stage")
    return hr_size


def resume(trainer: Trainer, ckpt_path: Path, digest: str, device: torch.device, where: str) -> Progress:
    """The progress (and trainer and RNG state) of the checkpoint when it holds the same inputs, else a fresh start.

    A stale checkpoint (other inputs) is deleted. `where` names the run in the log.
    """
    if not ckpt_path.is_file():
        return Progress()
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if state.get("inputs_hash") != digest:
        log.info("%s: discarding %s (its inputs differ)", where, ckpt_path)
        ckpt_path.unlink()
        return Progress()
    trainer.load_state_dict(state["trainer"])
    torch.set_rng_state(state["rng"]["torch"])
    if device.type == "cuda" and state["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    log.info("%s: resuming from %s at step %d", where, ckpt_path, state["step"])
    return Progress(state["step"], state["log"], state["pretrain_log"], state["seconds"], state.get("monitor", {}))


def write_checkpoint(ckpt_path: Path, digest: str, trainer: Trainer, progress: Progress,
                     watch: monitor.Monitor, device: torch.device) -> None:
    """Everything `resume` needs to continue this run bit-identically (on CPU), written atomically."""
    save_checkpoint(ckpt_path, {"inputs_hash": digest, "step": progress.step, "trainer": trainer.state_dict(),
                                "log": progress.rows, "pretrain_log": progress.pre_rows, "seconds": progress.seconds,
                                "monitor": watch.state_dict(),
                                "rng": {"torch": torch.get_rng_state(),
                                        "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None}})


def optimize(trainer: Trainer, phase: str, lr: torch.Tensor, hr: torch.Tensor, batch_size: int,
             separate: bool) -> dict:
    """One training step of `phase` on the step's batch (two mini-batches with d_update=separate): its losses."""
    if phase == "rec":
        return trainer.step_autoencoder(hr[:batch_size])
    if phase == "pretrain_mse":
        return trainer.step_pretrain(lr[:batch_size], hr[:batch_size])
    second = (lr[batch_size:], hr[batch_size:]) if separate else None
    return trainer.step_main(lr[:batch_size], hr[:batch_size], second)


def record_losses(ready: list[tuple[int, dict]], plan: list[tuple[str, int]], progress: Progress,
                  watch: monitor.Monitor) -> None:
    """Append read-back losses to the run's logs: main iterations to log.csv and DVCLive, the rest to pretrain_log."""
    for at, values in ready:
        phase, offset = current_phase(plan, at)
        if phase == "main":
            progress.rows.append({"iteration": at - offset, **values})
            watch.log_losses(at - offset, values)
        else:
            progress.pre_rows.append({"iteration": at, "phase": phase, "loss": next(iter(values.values()))})


def write_outputs(out_dir: Path, record: dict, strategy: Strategy, trainer: Trainer, plan: list[tuple[str, int]],
                  progress: Progress, watch: monitor.Monitor, device: torch.device, fast: bool) -> None:
    """The finished run: generator.pt, logs, DVCLive files and config.json (last: it marks the folder complete)."""
    save_generator(trainer.generator, trainer.arch, out_dir / "generator.pt")
    watch.close(out_dir)
    columns = main_columns(strategy, trainer)
    write_csv(out_dir / "log.csv", columns, progress.rows)
    if progress.pre_rows:
        write_csv(out_dir / "pretrain_log.csv", ["iteration", "phase", "loss"], progress.pre_rows)
    seconds, main_iterations = progress.seconds, plan[-1][1]
    config = {**record, "arch": trainer.arch, "lambda1": trainer.lambda1, "lambda2": trainer.lambda2,
              "iterations": main_iterations, "phases": dict(plan), "device": str(device),
              "fast": fast, "precision": trainer.precision,
              "torch": torch.__version__, "seconds": round(sum(seconds.values()), 3),
              "phase_seconds": {k: round(v, 3) for k, v in seconds.items()},
              "seconds_per_iteration": round(seconds["main"] / max(main_iterations, 1), 4),
              "monitor_seconds": round(watch.seconds, 3), "completed": True}
    if "loss_d" in columns:
        config["d_wins"] = monitor.d_wins(progress.rows)
        if config["d_wins"]:
            log.warning("%s/%s seed %s: the discriminator won outright (mean loss_d < %g over the last %d%% of "
                        "iterations): the adversarial signal vanished", record["dataset"], strategy.name,
                        record["seed"], monitor.D_WINS_LOSS, round(100 * monitor.D_WINS_SHARE))
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))


class TrainingRun:
    """The loop of one run, a global step per `step()` call: the step's batch, one optimisation step of its
    phase, losses read back (at once, or in groups on the fast path), logs, validation and checkpoints.

    What the checkpoint keeps is in `progress`; `total` is the last global step of the plan.
    """

    def __init__(self, trainer: Trainer, plan: list[tuple[str, int]], progress: Progress,
                 data: tuple[torch.Tensor, torch.Tensor], train: dict, device: torch.device, fast: bool,
                 watch: monitor.Monitor, ckpt_path: Path, digest: str, where: str) -> None:
        self.trainer, self.plan, self.progress, self.watch = trainer, plan, progress, watch
        self.device, self.ckpt_path, self.digest, self.where = device, ckpt_path, digest, where
        self.total = sum(n for _, n in plan)
        self.batch_size, self.seed = int(train["batch_size"]), int(train.get("seed", 0))
        self.separate, self.flips = trainer.d_update == "separate", bool(train.get("hflip", True))
        self.every = int(train["checkpoint_every"])
        self.last_good = progress.step if ckpt_path.is_file() else None
        lr_all, hr_all = data
        self.n_pairs = len(hr_all)
        self.batches = fast_path.Batches(lr_all, hr_all, self.indices, device, fast,
                                         range(progress.step + 1, self.total + 1))
        self.pending: list[tuple[int, dict]] = []  # fast path: (step, loss tensors) not read back yet
        self.window = time.perf_counter()
        self.bar = tqdm(total=self.total, initial=progress.step, desc=f"train {where}", unit="it",
                        dynamic_ncols=True, mininterval=1.0)

    def indices(self, s: int) -> torch.Tensor:
        """Batch A of step s, then (d_update=separate) the generator's batch B from stream 1."""
        first = batch_indices(self.n_pairs, self.batch_size, self.seed, s)
        if not self.separate:
            return first
        return torch.cat([first, batch_indices(self.n_pairs, self.batch_size, self.seed, s, 1)])

    def diverged(self, err: TrainingDiverged, at: int) -> TrainingDiverged:
        """The error to raise: where it diverged and which checkpoint is kept."""
        phase, offset = current_phase(self.plan, at)
        kept = (f"the last good checkpoint {self.ckpt_path} (step {self.last_good}) is kept"
                if self.last_good is not None else "no checkpoint was written yet")
        return TrainingDiverged(f"{self.where}: {err} at {phase} iteration {at - offset} (global step "
                                f"{at}); {kept}; lower train.lr or check the data")

    def feed_data(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step's (lr, hr) batch on the device, randomly flipped as the step's seed says."""
        lr, hr = self.batches(step)
        if self.flips:
            mask = flip_mask(len(hr), self.seed, step)
            lr, hr = hflip(lr, mask), hflip(hr, mask)
        return lr, hr

    def read_losses(self, step: int, phase: str, offset: int, values: dict, start: float) -> list[tuple[int, dict]]:
        """The losses ready to log after this step, as floats; the phase's seconds are counted here."""
        seconds = self.progress.seconds
        if not self.trainer.defer:
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds[phase] += time.perf_counter() - start
            return [(step, values)]
        # read the losses back in groups, always before a checkpoint and at the end of a phase
        self.pending.append((step, values))
        if step % READ_BACK_EVERY and step % self.every and step != offset + dict(self.plan)[phase]:
            return []
        try:
            ready = read_back(self.pending)
        except TrainingDiverged as err:
            raise self.diverged(err, err.step) from None
        self.pending = []
        seconds[phase] += time.perf_counter() - self.window
        return ready

    def step(self) -> None:
        """One global step, with its logging, validation and checkpoint."""
        self.progress.step += 1
        step = self.progress.step
        phase, offset = current_phase(self.plan, step)
        lr, hr = self.feed_data(step)
        start = time.perf_counter()
        try:
            values = optimize(self.trainer, phase, lr, hr, self.batch_size, self.separate)
        except TrainingDiverged as err:
            raise self.diverged(err, step) from None
        ready = self.read_losses(step, phase, offset, values, start)
        record_losses(ready, self.plan, self.progress, self.watch)
        if phase == "main" and self.watch.due(step - offset):
            self.watch.validate(step - offset, self.trainer.generator)  # eval mode, no gradients: training unchanged
        if phase == "rec" and step == self.plan[0][1]:
            self.trainer.freeze_extractor()  # disjoint learning: trained beforehand, then fixed
        self.bar.update(1)
        if ready:
            self.bar.set_postfix({k.removeprefix("loss_"): f"{v:.4g}" for k, v in ready[-1][1].items()}, refresh=False)
        if step % self.every == 0 and step < self.total:
            write_checkpoint(self.ckpt_path, self.digest, self.trainer, self.progress, self.watch, self.device)
            self.last_good = step
        if ready:
            self.window = time.perf_counter()  # the next read-back window starts here


def train_strategy(params: dict, dataset: str, name: str, out_dir: Path, data: tuple[torch.Tensor, torch.Tensor],
                   manifest_sha256: str, weights: Mapping[str, tuple[dict, dict]] | None = None,
                   stop_after: int | None = None, validation: monitor.ValidationSet | None = None) -> Path:
    """Train one strategy into `out_dir` (resuming from its checkpoint when it matches).

    `data` is (lr uint8, hr uint8) of the training split. `weights` holds, for each backbone the
    strategy's loss uses, (state_dict, record) as pipeline.nets.weights.resolve returns them; the record
    goes into config.json and its sha256 into the inputs hash. `stop_after` ends the process-like run
    after that many global steps without writing anything more, as a kill would (for tests).
    Losses are logged with DVCLive (pipeline.training.monitor) and, with a `validation` set, the generator is
    scored on it every `train.validate_every` main iterations.
    """
    strategy, train = registry.get(name), params["train"]
    out_dir.mkdir(parents=True, exist_ok=True)
    record = run_record(strategy, params, dataset, manifest_sha256, weights or {})
    if not strategy.trains_generator:
        atomic_write_text(out_dir / "config.json", json.dumps({**record, "untrained": True, "completed": True},
                                                              indent=2))
        return out_dir

    scale = int(params["crop"]["scale"])
    hr_size = check_pairs(dataset, data, scale)
    device = choose_device(train.get("device", "auto"))
    fast = fast_path.resolve(train.get("fast", "auto"), device)
    if fast:
        fast_path.configure_backends(device)
    trainer = Trainer(strategy, train, hr_size, scale, device, backbone_modules(strategy, train, weights or {}), fast)
    plan = phases(strategy, train)

    # Resume when a checkpoint of the same inputs exists; a stale one (other inputs) is discarded.
    ckpt_path, digest = out_dir / CHECKPOINT, record["inputs_hash"]
    (out_dir / "config.json").unlink(missing_ok=True)  # the folder is incomplete from here on
    progress = resume(trainer, ckpt_path, digest, device, f"{dataset}/{name}")
    if progress.step >= plan[0][1] and strategy.learning == "disjoint":
        trainer.freeze_extractor()  # resumed after the auto-encoder phase

    # DVCLive log and validation; rewritten from the checkpoint's history, so resumed steps are not duplicated
    watch = monitor.Monitor(out_dir, plan[-1][1], int(train.get("validate_every", 0)), validation, progress.rows,
                            progress.monitor.get("validation"))
    run = TrainingRun(trainer, plan, progress, data, train, device, fast, watch, ckpt_path, digest,
                      f"{dataset}/{name}")
    try:
        while progress.step < run.total:
            if stop_after is not None and progress.step >= stop_after:
                return out_dir
            run.step()
    finally:
        run.bar.close()

    write_outputs(out_dir, record, strategy, trainer, plan, progress, watch, device, fast)
    ckpt_path.unlink(missing_ok=True)
    return out_dir


def current_phase(plan: list[tuple[str, int]], step: int) -> tuple[str, int]:
    """The phase of a 1-based global step and the number of steps before that phase."""
    offset = 0
    for phase, n in plan:
        if step <= offset + n:
            return phase, offset
        offset += n
    raise ValueError(f"step {step} is past the plan {plan}")


def is_done(out_dir: Path, digest: str) -> bool:
    """A completed result of the same inputs (config.json says so and the weights are there)."""
    config_path = out_dir / "config.json"
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError:
        return False
    ok = config.get("completed") is True and config.get("inputs_hash") == digest
    return ok and (config.get("untrained") or (out_dir / "generator.pt").is_file())


# ---------------------------------------------------------------- one dataset

def seed_params(params: dict, seed: int) -> dict:
    """The parameters of one seed's run: `train.seed` set, `train.seeds` dropped.

    A seed's inputs hash is then independent of how many other seeds are trained, so adding a
    seed (`dvc exp run -S train.seeds=3`) trains only the new ones.
    """
    train = {k: v for k, v in params["train"].items() if k != "seeds"}
    return {**params, "train": {**train, "seed": int(seed)}}


def train_dataset(params: dict, dataset: str, strategies: list[str] | None = None,
                  root: Path = Path("."), stop_after: int | None = None,
                  seeds: list[int] | None = None, curves: bool = True) -> list[Path]:
    """Train the selected strategies (default: the `strategy` parameter) on one dataset, once per seed.

    Returns the model folders models/<dataset>/<slug>/seed-<k>/ (default seeds: `train.seeds`).
    A folder holding a completed result with the same inputs hash is not retrained. `curves` False
    skips the per-dataset overlays and train metrics (`export_monitoring`), for a job that trains
    one strategy and seed among others (the Snakefile, which exports them in a rule of their own).
    """
    names = registry.select(params["strategy"] if strategies is None else list(strategies))
    seeds = seed_list(params["train"]) if seeds is None else list(seeds)
    root = Path(root)
    manifest = root / paths.manifest_path(dataset)
    if not manifest.is_file():
        raise UserError(f"{manifest}: no crops for dataset {dataset!r}; run the crop stage first")
    manifest_sha = sha256_file(manifest)
    resolved = loss_weights(names, params, root)   # before any training: a missing backbone stops at once
    data = None
    validation = False  # the validation set, built when the first strategy is trained (None = off)
    outputs = []
    for name in names:
        strategy = registry.get(name)
        sha256 = {network: resolved[network][1]["sha256"] for network in strategy.backbones}
        for seed in seeds:
            run_params = seed_params(params, seed)
            out_dir = root / paths.model_dir(dataset, registry.slug(name), seed)
            digest = inputs_hash(strategy, run_params, manifest_sha, sha256)
            if is_done(out_dir, digest):
                log.info("%s/%s seed %d: up to date (%s), not retrained", dataset, name, seed, out_dir)
                outputs.append(out_dir)
                continue
            if strategy.trains_generator and zoo.take(root, dataset, registry.slug(name), seed, digest):
                log.info("%s/%s seed %d: taken from the model zoo (same inputs hash), not retrained", dataset, name, seed)
                outputs.append(out_dir)
                continue
            if data is None and strategy.trains_generator:
                lr, hr, _ = imageset.load_pairs(dataset, "train", root)
                data = (lr, hr)
            if validation is False and strategy.trains_generator:
                device = choose_device(params["train"].get("device", "auto"))
                validation = monitor.validation_set(params, dataset, root, device)
            outputs.append(train_strategy(run_params, dataset, name, out_dir, data, manifest_sha, resolved, stop_after,
                                          validation or None))
    export_curves(dataset, outputs, root)
    if curves:
        export_monitoring(params, dataset, root, outputs)
    return outputs


def loss_weights(names: list[str], params: dict, root: Path = Path(".")) -> dict[str, tuple[dict, dict]]:
    """The ImageNet weights of every backbone the selected strategies' losses use: network -> (state, record).

    Resolved in `eval.weights_order` (pipeline.nets.weights.resolve: cache, torchvision, registry); a
    backbone no source provides stops the run with one line naming it and where to put the file
    (WeightsUnavailable, exit code 2): never random weights.
    """
    networks = list(dict.fromkeys(b for n in names if registry.get(n).trains_generator
                                  for b in registry.get(n).backbones))
    if not networks:
        return {}
    from pipeline.nets import weights  # late import: only the backbone losses need ImageNet weights

    order = tuple(params.get("eval", {}).get("weights_order", weights.DEFAULT_ORDER))
    resolved, missing = {}, []
    for network in networks:
        try:
            resolved[network] = weights.resolve(network, order, root)
        except weights.WeightsUnavailable as err:
            users = ", ".join(n for n in names if network in registry.get(n).backbones)
            missing.append(f"strategy {users} needs ImageNet {network} weights: {err}")
    if missing:
        raise weights.WeightsUnavailable(" | ".join(missing))
    return resolved


def export_monitoring(params: dict, dataset: str, root: Path = Path("."), extra: list[Path] = ()) -> dict:
    """plots/curves/<dataset>/ and metrics/<dataset>-train.json (pipeline.training.monitor.export) from every
    completed model of the `strategy` x `train.seeds` selection (and `extra` folders)."""
    selected = [Path(root) / paths.model_dir(dataset, registry.slug(n), s)
                for n in registry.select(params["strategy"]) for s in seed_list(params["train"])]
    return monitor.export(dataset, list(dict.fromkeys(selected + list(extra))), Path(root))


def export_curves(dataset: str, model_dirs: list[Path], root: Path = Path(".")) -> None:
    """Copy each model's log.csv to plots/train/<dataset>/<slug>/seed-<k>.csv, the folder `dvc plots` reads.

    A copy, because dvc plots cannot pick the CSVs out of the models folder (it holds weights too).
    """
    for out_dir in model_dirs:
        log_csv = out_dir / "log.csv"
        if log_csv.is_file():
            seed = int(out_dir.name.removeprefix("seed-"))
            atomic_write_bytes(root / paths.train_curve_path(dataset, out_dir.parent.name, seed), log_csv.read_bytes())
