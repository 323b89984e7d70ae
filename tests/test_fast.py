"""The fast training path (pipeline.training.fast, train.fast) and the speed benchmark (bench/bench.py).

Tolerances (CPU, where the fast path = crops held as uint8 tensors and batched on the device,
channels_last, grouped loss read-back):
- per-step losses of fast vs plain training on the same seed and data: relative 1e-5 (observed
  below 3e-7: channels_last only reorders the convolutions' float sums);
- the generator loss under bf16 autocast vs fp32: relative 2e-2 (bf16 keeps 8 significant bits,
  a relative rounding of 2^-8 = 3.9e-3 per operation; observed below 3e-3);
- per-step training losses of bf16 autocast vs fp32 over 30 alternating updates of the same seed and
  data: relative 2e-2 (observed below 5.3e-3 for mse, adv,mse, ran, rec, dis,rec and adv,rec);
- resume from a checkpoint: bit-identical within one precision (fp32 and bf16).
The fast path takes bf16 on a CPU only where it computes bf16 natively (pipeline.training.fast.precision); the
tests that pin fp32 behaviour name the precision, so they hold on every CPU.
"""

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

from pipeline import paths
from pipeline.config import load_params, validate
from pipeline.data import imageset
from pipeline.errors import ConfigError
from pipeline.nets import strategies
from pipeline.training import fast
from pipeline.training.train import Trainer, TrainingDiverged, batch_indices, train_dataset

REPO = Path(__file__).resolve().parents[1]
DATASET = "tiny"
HR, SCALE = 32, 4
FAST_RTOL = 1e-5
BF16_RTOL = 2e-2


def tiny_params(**train) -> dict:
    params = load_params(REPO / "params.yaml")
    params["crop"].update({"hr_size": HR, "scale": SCALE})
    params["train"].update({"iterations": 4, "batch_size": 3, "checkpoint_every": 2, "rec_pretrain": 2,
                            "pretrain_mse": 0, "device": "cpu", "seed": 0,
                            "generator": {"blocks": 2, "width": 8, "upsample": "pixelshuffle"},
                            "discriminator": {"blocks": 4, "width": 8, "dense": 16}})
    params["train"].update(train)
    return params


def crops(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random colour fields (uint8 HR) and their area-downscaled LR crops."""
    rng = np.random.default_rng(seed)
    hr = np.stack([cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (HR, HR),
                              interpolation=cv2.INTER_CUBIC) for _ in range(n)])
    lr = np.stack([cv2.resize(h, (HR // SCALE, HR // SCALE), interpolation=cv2.INTER_AREA) for h in hr])
    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    return to_tensor(lr), to_tensor(hr)


def write_crops(root: Path, n: int = 8) -> None:
    lr, hr = crops(n)
    base = root / paths.crops_dir(DATASET)
    rows = []
    for i in range(n):
        for kind, image in (("hr", hr[i]), ("lr", lr[i])):
            (base / "train" / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / "train" / kind / f"{i:04d}.png"), np.ascontiguousarray(image.permute(1, 2, 0).numpy()))
        rows.append({"id": f"{i:04d}", "split": "train", "source": "synthetic", "x": 0, "y": 0, "size": HR,
                     "hr": f"train/hr/{i:04d}.png", "lr": f"train/lr/{i:04d}.png"})
    pd.DataFrame(rows, columns=list(imageset.MANIFEST_COLUMNS)).to_csv(base / "manifest.csv", index=False)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Bit-exact comparisons: one torch thread (conftest.one_torch_thread)."""


def train_steps(name: str, use_fast: bool, steps: int = 4, precision: str = "fp32") -> list[dict]:
    params = tiny_params()
    lr_u8, hr_u8 = crops()
    trainer = Trainer(strategies.get(name), params["train"], HR, SCALE, torch.device("cpu"), fast=use_fast,
                      precision=precision)
    batches = fast.Batches(lr_u8, hr_u8, lambda s: batch_indices(len(hr_u8), 3, 0, s), torch.device("cpu"),
                           use_fast, range(1, steps + 1))
    out = []
    for step in range(1, steps + 1):
        lr, hr = batches(step)
        out.append({k: float(v) for k, v in trainer.step_main(lr, hr).items()})
    return out


# ---------------------------------------------------------------- switches

def test_resolve_auto_is_on_for_every_device():
    assert fast.resolve("auto", torch.device("cpu")) is True
    assert fast.resolve("auto", torch.device("cuda")) is True
    assert fast.resolve("on", torch.device("cpu")) is True and fast.resolve("off", torch.device("cuda")) is False
    with pytest.raises(ValueError, match="valid choices: auto, on, off"):
        fast.resolve("fastest", torch.device("cpu"))


def test_config_validates_train_fast():
    params = load_params(REPO / "params.yaml")
    assert params["train"]["fast"] == "auto"
    bad = copy.deepcopy(params)
    bad["train"]["fast"] = "turbo"
    with pytest.raises(ConfigError, match="train.fast: invalid value 'turbo'; valid choices: auto, on, off"):
        validate(bad)
    yaml_on = copy.deepcopy(params)
    yaml_on["train"]["fast"] = True  # what YAML 1.1 makes of a bare `on`
    assert validate(yaml_on)["train"]["fast"] == "on"


def test_fast_batches_equal_plain_batches_in_channels_last():
    lr_u8, hr_u8 = crops()
    index = lambda s: batch_indices(len(hr_u8), 3, 0, s)
    plain = fast.Batches(lr_u8, hr_u8, index, torch.device("cpu"), False)
    quick = fast.Batches(lr_u8, hr_u8, index, torch.device("cpu"), True, range(1, 4))
    for step in (1, 3, 7):  # 7 is outside the precomputed index table
        (a_lr, a_hr), (b_lr, b_hr) = plain(step), quick(step)
        assert torch.equal(a_lr, b_lr) and torch.equal(a_hr, b_hr)
        assert b_hr.is_contiguous(memory_format=torch.channels_last)


def test_trainer_networks_take_the_memory_format_of_their_path():
    trainer = Trainer(strategies.get("adv,rec"), tiny_params()["train"], HR, SCALE, fast=True)
    conv = trainer.generator.head[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    plain = Trainer(strategies.get("adv,rec"), tiny_params()["train"], HR, SCALE, fast=False)
    assert plain.extractor.encoder[1][0].weight.is_contiguous()


# ---------------------------------------------------------------- same losses

@pytest.mark.parametrize("name", ["mse", "ran", "adv,rec"])
def test_fast_path_losses_match_plain_path(name):
    """channels_last and the device batches (fp32) change no loss beyond float reordering."""
    plain, quick = train_steps(name, False), train_steps(name, True)
    assert [r.keys() for r in plain] == [r.keys() for r in quick]
    for a, b in zip(plain, quick):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=FAST_RTOL), (k, a[k], b[k])
    assert plain[0] != plain[-1]  # the networks did learn: the comparison covers updated weights


@pytest.mark.parametrize("name", ["mse", "adv,rec"])
def test_bf16_autocast_generator_loss_within_tolerance(name):
    trainer = Trainer(strategies.get(name), tiny_params()["train"], HR, SCALE, fast=False)
    lr_u8, hr_u8 = crops()
    lr, hr = imageset.to_unit(lr_u8[:3]), imageset.to_unit(hr_u8[:3])
    with torch.no_grad():
        _, fp32 = trainer.generator_losses(lr, hr)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sr16, bf16 = trainer.generator_losses(lr, hr)
    assert sr16.dtype == torch.bfloat16  # autocast did run the generator in bf16
    for k in fp32:
        assert bf16[k].dtype == torch.float32  # the losses themselves are fp32
        assert float(bf16[k]) == pytest.approx(float(fp32[k]), rel=BF16_RTOL), k


# ---------------------------------------------------------------- bf16 on CPU

def test_auto_takes_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(fast.CPU_BF16_ENV, raising=False)   # the CI's forced-bf16 run sets it; this test is about auto
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: False)
    assert fast.precision(cpu, fast.resolve("auto", cpu)) == "fp32"      # emulated bf16 would be slower
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: True)
    assert fast.precision(cpu, fast.resolve("auto", cpu)) == "bf16"
    assert fast.precision(cpu, fast.resolve("off", cpu)) == "fp32"       # off stays plain fp32
    assert fast.precision(torch.device("cuda"), True) == "bf16"
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: False)
    monkeypatch.setenv(fast.CPU_BF16_ENV, "1")
    assert fast.precision(cpu, fast.resolve("auto", cpu)) == "bf16"      # forced: bf16 on any CPU
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: True)
    trainer = Trainer(strategies.get("mse"), tiny_params(fast="auto")["train"], HR, SCALE)
    assert trainer.precision == "bf16"
    with trainer.autocast():
        assert trainer.generator(imageset.to_unit(crops(2)[0])).dtype == torch.bfloat16


def test_native_bf16_detection_agrees_with_the_cpu_flags():
    flags = fast.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this system")
    assert fast.native_bf16_cpu() == bool(flags & set(fast.BF16_CPU_FLAGS))


@pytest.mark.parametrize("name", ["mse", "adv,mse", "rec", "adv,rec"])
def test_bf16_training_losses_track_fp32_over_thirty_steps(name):
    fp32, bf16 = train_steps(name, True, 30, "fp32"), train_steps(name, True, 30, "bf16")
    assert [r.keys() for r in fp32] == [r.keys() for r in bf16]
    assert fp32 != bf16  # bf16 did run: its rounding shows in the losses
    for a, b in zip(fp32, bf16):
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=BF16_RTOL), (k, a[k], b[k])
    assert fp32[0]["loss_g"] != fp32[-1]["loss_g"]  # 30 updates moved the weights


def test_bf16_training_resumes_bit_identically(tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "native_bf16_cpu", lambda: True)   # bf16 on this CPU, native or not
    params = tiny_params(fast="auto", iterations=5)
    whole = train_dataset(params, DATASET, ["adv,rec"], _crops_root(tmp_path / "whole"))[0]
    cut = _crops_root(tmp_path / "cut")
    train_dataset(params, DATASET, ["adv,rec"], cut, stop_after=3)
    resumed = train_dataset(params, DATASET, ["adv,rec"], cut)[0]
    assert json.loads((resumed / "config.json").read_text())["precision"] == "bf16"
    pd.testing.assert_frame_equal(pd.read_csv(resumed / "log.csv"), pd.read_csv(whole / "log.csv"))
    a, b = (torch.load(f / "generator.pt", weights_only=True)["state_dict"] for f in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _crops_root(root: Path) -> Path:
    write_crops(root)
    return root


def test_train_stage_fast_on_matches_off_and_resumes_exactly(tmp_path):
    logs = {}
    for mode in ("off", "on"):
        root = tmp_path / mode
        write_crops(root)
        folder = train_dataset(tiny_params(fast=mode, iterations=5), DATASET, ["adv,rec"], root)[0]
        logs[mode] = pd.read_csv(folder / "log.csv")
        config = json.loads((folder / "config.json").read_text())
        assert config["precision"] == fast.precision(torch.device("cpu"), mode == "on")
    assert list(logs["on"]["iteration"]) == [1, 2, 3, 4, 5]
    # fp32 on a CPU without native bf16: equal to float reordering; bf16 where the CPU has it
    rtol = FAST_RTOL if fast.precision(torch.device("cpu"), True) == "fp32" else BF16_RTOL
    pd.testing.assert_frame_equal(logs["off"], logs["on"], check_exact=False, rtol=rtol)
    # killed after step 3 of the fast path: the checkpoint of step 2 is resumed bit-identically on CPU
    cut = tmp_path / "cut"
    write_crops(cut)
    params = tiny_params(fast="on", iterations=5)
    train_dataset(params, DATASET, ["adv,rec"], cut, stop_after=3)
    folder = train_dataset(params, DATASET, ["adv,rec"], cut)[0]
    pd.testing.assert_frame_equal(pd.read_csv(folder / "log.csv"), logs["on"])
    whole = torch.load(tmp_path / "on" / "models" / DATASET / "adv+rec" / "seed-0" / "generator.pt", weights_only=True)
    resumed = torch.load(folder / "generator.pt", weights_only=True)
    assert all(torch.equal(whole["state_dict"][k], resumed["state_dict"][k]) for k in whole["state_dict"])


def test_fast_path_reports_divergence_at_the_right_step(tmp_path):
    write_crops(tmp_path)
    params = tiny_params(fast="on", pretrain_mse=2, checkpoint_every=2, lambda1=float("inf"))
    with pytest.raises(TrainingDiverged) as err:
        train_dataset(params, DATASET, ["mse"], tmp_path)
    folder = tmp_path / "models" / DATASET / "mse" / "seed-0"
    assert "loss_g became inf at main iteration 1 (global step 3)" in str(err.value)
    assert "(step 2)" in str(err.value)
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["step"] == 2


# ---------------------------------------------------------------- the benchmark script

def test_bench_tiny_runs_end_to_end(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench.py"), "--tiny", "--device", "cpu",
                           "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "results-cpu.csv")
    train = table[table["section"] == "train"]
    expected = [n for n in strategies.NAMES if strategies.get(n).trains_generator]
    assert set(expected) <= set(train["item"])
    timed = train[train["measured"]]
    assert {"mse", "adv,rec"} <= set(timed["item"])  # need no ImageNet weights
    assert (timed["plain"] > 0).all() and (timed["fast"] > 0).all()
    assert np.allclose(timed["ratio"], timed["fast"] / timed["plain"], rtol=1e-3)
    assert (train["flops"] > 0).all()
    # more networks to train costs more FLOPs: adv,rec (G + D + decoder) > mse (G only)
    flops = train.set_index("item")["flops"]
    assert flops["adv,rec"] > flops["mse"]
    evals = table[table["section"] == "eval"]
    assert evals["item"].str.startswith("score_batch").any() and (evals["plain"] > 0).all()
    md = (tmp_path / "results-cpu.md").read_text()
    assert "| strategy | GFLOP/it" in md and "fast/plain" in md and "ESTIMATE" in md and "load average" in md
