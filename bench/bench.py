"""Speed benchmark: training iterations/s and evaluation images/s, fast path vs plain eager fp32.

For each strategy that trains a generator, at the embedded default's sizes (params.yaml) and at the
paper's (params.yaml + configs/paper.yaml: HR 256, batch 10, 10-block generator, 8-block
discriminator), one training iteration (pipeline.training.train.Trainer.step_main; the `rec` auto-encoder's
pre-training step as its own row) is timed on the plain path (host batches, per-step loss read-back,
contiguous fp32) and on the fast path (pipeline.training.fast) in the same run, on synthetic random uint8
crops. Evaluation (pipeline.evaluation.evaluate.score_batch: every strategy's SR, the available LPIPS networks,
L2/SSIM/PSNR) is timed batched and one image at a time, the low-level metrics both in numpy (the reference)
and in torch (what score_batch runs). FLOPs per iteration are counted with
torch.utils.flop_counter on the meta device (no compute). From these, the wall time of a whole
configuration is estimated on the measured device, and an H100 estimate is derived from the FLOP
counts (an estimate, never a measurement). Writes bench/results-<device>.md and .csv.

    python bench/bench.py                      # default and paper sizes, every strategy
    python bench/bench.py --threads 1 --paper-strategies mse,adv,adv,rec,srgan   # a loaded 2-core CPU
    python bench/bench.py --tiny --out /tmp/b  # smoke run (seconds)

Weights (the loss backbones of the registry's strategies, LPIPS trunks) come from pipeline.nets.weights
(cache first); a strategy whose backbone weights cannot be had is not timed (its rate is estimated
from its FLOPs), never trained on random weights; FLOP counts use random weights (shapes only).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import load_params, seed_list
from pipeline.data.imageset import to_unit
from pipeline.evaluation import metrics, perceptual
from pipeline.evaluation.evaluate import score_batch
from pipeline.nets import strategies as registry
from pipeline.nets.networks import Bicubic, Generator
from pipeline.training import fast as fast_path
from pipeline.training.train import READ_BACK_EVERY, Trainer, backbone_modules, batch_indices, read_back
from pipeline.training.train import write_csv as train_write_csv

REPO = Path(__file__).resolve().parents[1]
TRAINED = [n for n in registry.NAMES if registry.get(n).trains_generator]
REC_AE = "rec (auto-encoder pre-training)"
NUMPY_METRICS = "L2 + SSIM + PSNR + PSNR-Y (per image, numpy)"
TORCH_METRICS = "L2 + SSIM + PSNR + PSNR-Y (torch float64 on the device, as score_batch)"

# H100 SXM5 dense peak throughput (NVIDIA datasheet, without sparsity), for the labelled estimate only.
H100_PEAK = {"bf16": 989e12, "tf32": 495e12}
H100_EFFICIENCY = 0.30     # assumed sustained share of peak for 64-channel convs at batch 10 (an assumption)
LAUNCH_S = 5e-6            # assumed host cost of one eager op launch on CUDA (an assumption)
ADAM_FOREACH_OPS = 10      # kernels of one plain (foreach) Adam step; fused Adam is one


# ---------------------------------------------------------------- configurations

def merge(base: dict, overlay: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def size_params(size: str, hr_size: int | None = None) -> dict:
    """The parameters of a benchmark size: `default` (params.yaml), `paper` (+ configs/paper.yaml), `tiny`.

    `hr_size` overrides the default size's crop.hr_size (e.g. 64, where bf16 on CPU was measured).
    """
    params = load_params(REPO / "params.yaml")
    if size == "default" and hr_size:
        params = merge(params, {"crop": {"hr_size": int(hr_size)}})
    if size == "paper":
        params = merge(params, yaml.safe_load((REPO / "configs" / "paper.yaml").read_text()))
    elif size == "tiny":
        params = merge(params, {"crop": {"hr_size": 32, "scale": 4},  # 32: the smallest AlexNet (LPIPS) input
                                "train": {"batch_size": 2, "generator": {"blocks": 1, "width": 8},
                                          "discriminator": {"blocks": 2, "width": 8, "dense": 16}},
                                "eval": {"batch_size": 2}})
    return params


def synthetic_pairs(n: int, hr_size: int, scale: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 HR crops and their area-downscaled LR crops (speed does not depend on content)."""
    g = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (n, 3, hr_size, hr_size), dtype=torch.uint8, generator=g)
    lr = F.avg_pool2d(hr.float(), scale).round().to(torch.uint8)
    return lr, hr


# ---------------------------------------------------------------- counting (meta device: no compute)

class OpCounter(TorchDispatchMode):
    """Counts aten ops (about one kernel launch each on CUDA), split into optimizer and other ops."""

    def __init__(self) -> None:
        super().__init__()
        self.ops, self.optimizer_ops, self.optimizer_steps, self.in_optimizer = 0, 0, 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.in_optimizer:
            self.optimizer_ops += 1
        else:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_iteration(params: dict, name: str, phase: str = "main") -> dict:
    """FLOPs and aten ops of one training iteration, counted on the meta device."""
    train, hr_size, scale = params["train"], int(params["crop"]["hr_size"]), int(params["crop"]["scale"])
    strategy = registry.get(name)
    meta = torch.device("meta")
    from pipeline.nets.weights import random_weights
    # random weights: only shapes matter for counting
    modules = backbone_modules(strategy, train, {b: random_weights(b) for b in strategy.backbones})
    trainer = Trainer(strategy, train, hr_size, scale, meta, modules, fast=True)  # deferred read-back: no .item() on meta
    if phase == "main" and strategy.learning == "disjoint":
        trainer.freeze_extractor()
    batch = int(train["batch_size"])
    lr = torch.empty(batch, 3, hr_size // scale, hr_size // scale, device=meta)
    hr = torch.empty(batch, 3, hr_size, hr_size, device=meta)
    counter = OpCounter()

    def pre(*_):
        counter.in_optimizer = True
        counter.optimizer_steps += 1

    def post(*_):
        counter.in_optimizer = False

    hooks = [register_optimizer_step_pre_hook(pre),
             register_optimizer_step_post_hook(post)]
    try:
        with FlopCounterMode(display=False) as flops, counter:
            trainer.step_autoencoder(hr) if phase == "rec" else trainer.step_main(lr, hr)
    finally:
        for h in hooks:
            h.remove()
    return {"flops": flops.get_total_flops(), "ops": counter.ops, "optimizer_steps": counter.optimizer_steps}


def count_eval(params: dict, nets: dict) -> dict:
    """FLOPs per test image of one generator's SR and of each LPIPS network's features (meta device)."""
    hr_size, scale = int(params["crop"]["hr_size"]), int(params["crop"]["scale"])
    gen = generator_for(params).to("meta")
    out = {}
    with FlopCounterMode(display=False) as fc:
        gen(torch.empty(1, 3, hr_size // scale, hr_size // scale, device="meta"))
    out["sr"] = fc.get_total_flops()
    for net, pnet in nets.items():
        clone = copy.deepcopy(pnet).to("meta")
        with FlopCounterMode(display=False) as fc:
            clone.features(torch.empty(1, 3, hr_size, hr_size, device="meta"))
        out[f"lpips-{net}"] = fc.get_total_flops()
    return out


# ---------------------------------------------------------------- timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def generator_for(params: dict) -> Generator:
    gen = params["train"]["generator"]
    return Generator(int(gen.get("blocks", 10)), int(gen.get("width", 64)), gen.get("upsample", "pixelshuffle"),
                     int(params["crop"]["scale"])).eval()


def compile_trainer(trainer: Trainer) -> None:
    """torch.compile the generator and each block of the extractor (its methods, not forward, are called)."""
    trainer.generator = fast_path.compile_module(trainer.generator)
    if trainer.extractor is not None:
        ex = trainer.extractor
        for i, block in enumerate(ex.encoder):
            ex.encoder[i] = fast_path.compile_module(block)
        for part in ("head", "decoder"):
            if getattr(ex, part) is not None:
                setattr(ex, part, fast_path.compile_module(getattr(ex, part)))


def training_setup(params: dict, name: str, fast: bool, device: torch.device, weights: dict,
                   total: int, phase: str = "main", compile_: bool = False, precision: str | None = None):
    """The trainer of one strategy and its batches of steps 1..total on synthetic crops, and the step function.

    `weights`: network -> (state_dict, record) of the ImageNet backbones (pipeline.nets.weights.resolve).
    `precision` (bf16 / fp32) overrides pipeline.training.fast.precision (e.g. bf16 on a CPU that emulates it).
    """
    train, hr_size, scale = params["train"], int(params["crop"]["hr_size"]), int(params["crop"]["scale"])
    strategy = registry.get(name)
    if fast:
        fast_path.configure_backends(device)
    trainer = Trainer(strategy, train, hr_size, scale, device, backbone_modules(strategy, train, weights), fast=fast,
                      precision=precision)
    if phase == "main" and strategy.learning == "disjoint":
        trainer.freeze_extractor()
    if compile_:
        compile_trainer(trainer)
    batch, seed = int(train["batch_size"]), int(train.get("seed", 0))
    n = max(4 * batch, 20)
    lr_u8, hr_u8 = synthetic_pairs(n, hr_size, scale)
    batches = fast_path.Batches(lr_u8, hr_u8, lambda s: batch_indices(n, batch, seed, s), device, fast,
                                range(1, total + 1))

    def step(s: int) -> dict:
        lr, hr = batches(s)
        return trainer.step_autoencoder(hr) if phase == "rec" else trainer.step_main(lr, hr)

    return trainer, step


def run_steps(trainer: Trainer, step, first: int, last: int, device: torch.device, marks: list | None = None) -> None:
    """Steps first..last as the training loop runs them (grouped read-back on the fast path, a sync per step
    on the plain one); with `marks`, a time mark before each step and after the last (`time_mark`)."""
    pending = []
    for s in range(first, last + 1):
        if marks is not None:
            marks.append(time_mark(device))
        values = step(s)
        if trainer.defer:
            pending.append((s, values))
            if len(pending) == READ_BACK_EVERY:
                read_back(pending)
                pending = []
        else:
            sync(device)
    if marks is not None:
        marks.append(time_mark(device))
    if pending:
        read_back(pending)
    sync(device)


def time_mark(device: torch.device):
    """A point in time: a recorded CUDA event on CUDA (the GPU's clock), else the host clock."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def mark_seconds(marks: list, device: torch.device) -> list[float]:
    """Seconds between consecutive marks (after a sync, so every CUDA event has completed)."""
    sync(device)
    if device.type == "cuda":
        return [a.elapsed_time(b) / 1e3 for a, b in zip(marks, marks[1:])]
    return [b - a for a, b in zip(marks, marks[1:])]


def time_training(params: dict, name: str, fast: bool, device: torch.device, weights: dict,
                  warmup: int, iters: int, phase: str = "main", compile_: bool = False,
                  precision: str | None = None, stats: dict | None = None) -> float:
    """Seconds per training iteration, the loop of pipeline.training.train.train_strategy on synthetic crops.

    `stats`, when given, receives `warmup_extra_s`: the warm-up's seconds beyond the timed rate (with
    `compile_`, the compilation time torch.compile must win back).
    """
    trainer, step = training_setup(params, name, fast, device, weights, warmup + iters, phase, compile_, precision)
    start = time.perf_counter()
    run_steps(trainer, step, 1, warmup, device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    run_steps(trainer, step, warmup + 1, warmup + iters, device)
    seconds = (time.perf_counter() - start) / iters
    if stats is not None:
        stats["warmup_extra_s"] = max(warm - warmup * seconds, 0.0)
    return seconds


def training_step_times(params: dict, name: str, fast: bool, device: torch.device, weights: dict,
                        warmup: int, iters: int, phase: str = "main") -> list[float]:
    """Seconds of each of `iters` training iterations after `warmup` (CUDA events on CUDA, host clock on CPU).

    The loop of `time_training`; each iteration's time runs from its mark to the next one, so on the
    GPU's timeline the fast path's queued steps and the plain path's per-step syncs are both counted.
    """
    trainer, step = training_setup(params, name, fast, device, weights, warmup + iters, phase)
    run_steps(trainer, step, 1, warmup, device)
    marks: list = []
    run_steps(trainer, step, warmup + 1, warmup + iters, device, marks)
    return mark_seconds(marks, device)


def matmul_rate(device: torch.device, n: int, dtype: torch.dtype = torch.bfloat16, warmup: int = 3,
                iters: int = 10) -> float:
    """FLOP/s of an n x n x n matrix product on random data (median of `iters` timed products after `warmup`)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    for _ in range(warmup):
        a @ b
    marks = [time_mark(device)]
    for _ in range(iters):
        a @ b
        marks.append(time_mark(device))
    seconds = sorted(mark_seconds(marks, device))
    return 2 * n ** 3 / seconds[len(seconds) // 2]


def time_eval(params: dict, nets: dict, device: torch.device, n_images: int, batch: int) -> list[dict]:
    """Evaluation images/s: the whole score_batch (every strategy) and its parts, batched and one at a time."""
    hr_size, scale = int(params["crop"]["hr_size"]), int(params["crop"]["scale"])
    lr_u8, hr_u8 = synthetic_pairs(n_images, hr_size, scale, seed=1)
    torch.manual_seed(0)
    models = {"bicubic": Bicubic(scale).eval().to(device), **{n: generator_for(params).to(device) for n in TRAINED}}
    gen = models[TRAINED[0]]
    batch = max(1, min(batch, n_images))

    def rate(fn, bs: int) -> float:
        fn(0, min(bs, n_images))  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(0, n_images, bs):
            fn(i, min(i + bs, n_images))
        sync(device)
        return n_images / (time.perf_counter() - start)

    rows = []

    def add(item: str, fn, unit: str, batched: bool = True) -> None:
        rows.append({"item": item, "plain": rate(fn, 1), "fast": rate(fn, batch) if batched else None,
                     "unit": unit, "batch": batch})

    add(f"score_batch, all {len(models)} strategies + {len(nets)} LPIPS nets + L2/SSIM/PSNR",
        lambda a, b: score_batch(models, nets, lr_u8[a:b], hr_u8[a:b], scale, device), "test images/s")
    with torch.no_grad():
        add("SR, one generator", lambda a, b: gen(to_unit(lr_u8[a:b]).to(device)).float().cpu(), "images/s")
        hr_unit, sr_unit = to_unit(hr_u8).to(device), to_unit(hr_u8.flip(-1)).to(device)
        for net, pnet in nets.items():
            ref = pnet.features(hr_unit)  # the references' features are computed once per batch in evaluate
            add(f"LPIPS {net} (SR features + raw and calibrated distances)",
                lambda a, b, p=pnet, r=ref: p.distances(p.features(sr_unit[a:b]), [f[a:b] for f in r])[0].cpu(),
                "images/s")
    sr_np, hr_np = hr_u8.flip(-1).permute(0, 2, 3, 1).numpy(), hr_u8.permute(0, 2, 3, 1).numpy()
    add(NUMPY_METRICS, lambda a, b: [metrics.image_metrics(sr_np[i], hr_np[i], scale) for i in range(a, b)],
        "images/s", batched=False)
    sr_dev, hr_dev = hr_u8.flip(-1).to(device), hr_u8.to(device)
    add(TORCH_METRICS, lambda a, b: metrics.batch_metrics(sr_dev[a:b], hr_dev[a:b], scale)["ssim_y"].cpu(), "images/s")
    return rows


# ---------------------------------------------------------------- estimates

def run_plan(params: dict) -> tuple[list[tuple[str, int, str]], int]:
    """(strategy, iterations, phase) of a whole configuration per dataset, and its number of test images."""
    train = params["train"]
    plan = []
    for name in registry.select(params["strategy"]):
        s = registry.get(name)
        if not s.trains_generator:
            continue
        plan.append((name, int(train["iterations"]), "main"))
        if int(train.get("pretrain_mse", 0)):
            plan.append((name, int(train["pretrain_mse"]), "main"))  # approximated by a main iteration
        if s.learning == "disjoint" and int(train.get("rec_pretrain", 0)):
            plan.append((REC_AE, int(train["rec_pretrain"]), "rec"))
    n_test = sum(int(params["data"][d].get("crop", {}).get("n_test", 1)) for d in params["datasets"])
    return plan, n_test


def h100_iteration(count: dict, fast: bool) -> float:
    """Estimated H100 seconds of one iteration from its FLOPs and op count (assumptions in the constants)."""
    fb_ops = count["ops"]
    if fast:  # bf16, fused Adam, losses read back in groups: host launches overlap the GPU work
        return max(count["flops"] / (H100_EFFICIENCY * H100_PEAK["bf16"]),
                   (fb_ops + count["optimizer_steps"]) * LAUNCH_S)
    # fp32 (TF32 convolutions, cuDNN's default), foreach Adam, a sync every step: the two add up
    return (count["flops"] / (H100_EFFICIENCY * H100_PEAK["tf32"])
            + (fb_ops + ADAM_FOREACH_OPS * count["optimizer_steps"]) * LAUNCH_S)


def fmt_seconds(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


# ---------------------------------------------------------------- main

def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda-" + "".join(c if c.isalnum() else "-" for c in torch.cuda.get_device_name(device).lower()).strip("-")
    return "cpu"


def environment(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    if device.type == "cpu":
        try:
            name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
    return {"device": f"{device.type}: {name}", "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "cudnn": str(torch.backends.cudnn.version()) if device.type == "cuda" else "n/a",
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--sizes", default="default,paper", help="comma list of default, paper, tiny")
    p.add_argument("--hr-size", type=int, default=None, help="HR crop size of the default size (default: params.yaml)")
    p.add_argument("--strategies", default="all", help="strategies timed at the default size (comma list or all)")
    p.add_argument("--paper-strategies", default="all",
                   help="strategies timed at the paper size; the others are estimated from their FLOPs")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5, help="timed iterations per strategy and path")
    p.add_argument("--paper-warmup", type=int, default=None, help="default: --warmup (1 on CPU)")
    p.add_argument("--paper-iters", type=int, default=None, help="default: --iters (1 on CPU)")
    p.add_argument("--eval-images", type=int, default=16)
    p.add_argument("--paper-eval-images", type=int, default=None, help="default: --eval-images (4 on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="also time the fast path with torch.compile, and its compile time")
    p.add_argument("--bf16", action="store_true",
                   help="also time the fast path in bf16 autocast, even where the CPU emulates bf16")
    p.add_argument("--tiny", action="store_true", help="smoke run: tiny networks and sizes, 1+1 iterations")
    p.add_argument("--root", type=Path, default=REPO, help="where weights/ is (pipeline.nets.weights cache)")
    p.add_argument("--out", type=Path, default=REPO / "bench")
    args = p.parse_args(argv)
    if args.tiny:
        args.sizes, args.warmup, args.iters, args.eval_images = "tiny", 1, 1, 2
    return args


def names_from(text: str) -> list[str]:
    """The trained strategies of a comma list such as `mse,adv,adv,rec` (names with commas read as themselves)."""
    if text == "all":
        return list(TRAINED)
    for name in sorted(registry.NAMES, key=len, reverse=True):   # `adv,rec` before `adv`
        if "," in name:
            text = text.replace(name, registry.slug(name))
    names = registry.select([t for t in text.split(",") if t])
    return [n for n in names if n in TRAINED]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    on_cpu = device.type == "cpu"
    env = environment(device)
    auto_fast = fast_path.resolve("auto", device)
    env["fast_precision"] = fast_path.precision(device, auto_fast)
    env["native_bf16"] = device.type == "cuda" or fast_path.native_bf16_cpu()
    print("  matmul ceilings ...", file=sys.stderr, flush=True)
    n = 512 if args.tiny else 2048
    ceilings = {"fp32": matmul_rate(device, n, torch.float32, 1, 5), "bf16": matmul_rate(device, n, torch.bfloat16, 1, 5)}
    env.update({"matmul_fp32": ceilings["fp32"], "matmul_bf16": ceilings["bf16"], "matmul_n": n})
    print(f"bench on {env['device']}, torch {env['torch']}, {env['threads']} threads, load {env['load_average_start']}",
          file=sys.stderr)

    from pipeline.nets import weights
    resolved = {}   # the loss backbones that could be had: network -> (state_dict, record)
    weight_notes = []
    for network in registry.backbones():
        try:
            resolved[network] = weights.resolve(network, ("cache",) if args.tiny else weights.DEFAULT_ORDER, args.root)
        except weights.WeightsUnavailable as err:
            users = ", ".join(n for n in TRAINED if network in registry.get(n).backbones)
            weight_notes.append(f"{users} not timed: {err}")
    order = ("cache",) if args.tiny else tuple(load_params(REPO / "params.yaml")["eval"]["weights_order"])
    nets, status = perceptual.load_networks(list(perceptual.NETS), order, args.root, device)
    weight_notes += [f"LPIPS {n}: n/a ({s['reason'][:160]})" for n, s in status.items() if not s["available"]]

    rows: list[dict] = []      # the CSV
    estimates: list[str] = []
    per_size = {}
    for size in args.sizes.split(","):
        params = size_params(size, args.hr_size)
        is_paper = size == "paper"
        warmup = (args.paper_warmup if args.paper_warmup is not None else (1 if on_cpu else args.warmup)) \
            if is_paper else args.warmup
        iters = (args.paper_iters if args.paper_iters is not None else (1 if on_cpu else args.iters)) \
            if is_paper else args.iters
        timed = names_from(args.paper_strategies if is_paper else args.strategies)
        hr, batch = int(params["crop"]["hr_size"]), int(params["train"]["batch_size"])
        label = f"{size} (HR {hr}, batch {batch}, G {params['train']['generator']['blocks']} blocks, " \
                f"D {params['train']['discriminator']['blocks']} blocks)"
        items = [(n, "main") for n in TRAINED] + [(REC_AE, "rec")]
        train_rows = {}
        for item, phase in items:
            name = "rec" if item == REC_AE else item
            count = count_iteration(params, name, phase)
            row = {"section": "train", "size": size, "hr": hr, "batch": batch, "item": item, "unit": "it/s",
                   "flops": count["flops"], "ops": count["ops"] + count["optimizer_steps"],
                   "plain": None, "fast": None, "compiled": None, "measured": False, "count": count,
                   "warmup": warmup, "iters": iters}
            can_time = name in timed and set(registry.get(name).backbones) <= set(resolved)
            if can_time:
                print(f"  train {size} {item}: plain ...", file=sys.stderr, flush=True)
                row["plain"] = 1 / time_training(params, name, False, device, resolved, warmup, iters, phase)
                print(f"  train {size} {item}: fast ...", file=sys.stderr, flush=True)
                row["fast"] = 1 / time_training(params, name, True, device, resolved, warmup, iters, phase)
                if args.bf16:
                    print(f"  train {size} {item}: fast bf16 ...", file=sys.stderr, flush=True)
                    row["bf16"] = 1 / time_training(params, name, True, device, resolved, warmup, iters, phase,
                                                    precision="bf16")
                if args.compile:
                    print(f"  train {size} {item}: fast compiled ...", file=sys.stderr, flush=True)
                    stats: dict = {}
                    row["compiled"] = 1 / time_training(params, name, True, device, resolved, warmup, iters, phase,
                                                        True, stats=stats)
                    row["compile_s"] = stats["warmup_extra_s"]
                row["measured"] = True
            train_rows[item] = row
        # unmeasured strategies: seconds from their FLOPs at the measured strategies' mean seconds per FLOP
        measured = [r for r in train_rows.values() if r["measured"]]
        for mode in ("plain", "fast"):
            if measured:
                s_per_flop = sum(1 / r[mode] / r["flops"] for r in measured) / len(measured)
                for r in train_rows.values():
                    if not r["measured"]:
                        r[mode] = 1 / (r["flops"] * s_per_flop)
        for r in train_rows.values():
            r["ratio"] = r["fast"] / r["plain"] if r["fast"] and r["plain"] else None
            # achieved share of the matmul ceiling of each path's precision (plain is fp32)
            r["plain_of_peak"] = r["plain"] * r["flops"] / ceilings["fp32"] if r["plain"] else None
            r["fast_of_peak"] = r["fast"] * r["flops"] / ceilings[env["fast_precision"]] if r["fast"] else None
            if r.get("compiled") and r.get("compile_s") is not None and r["compiled"] > r["fast"]:
                r["break_even"] = r["compile_s"] / (1 / r["fast"] - 1 / r["compiled"])  # iterations to repay it
            r["h100_plain"] = 1 / h100_iteration(r["count"], False)
            r["h100_fast"] = 1 / h100_iteration(r["count"], True)
            rows.append(r)

        eval_images = (args.paper_eval_images or (4 if on_cpu else args.eval_images)) if is_paper else args.eval_images
        print(f"  eval {size}: {eval_images} images ...", file=sys.stderr, flush=True)
        eval_rows = time_eval(params, nets, device, eval_images, int(params["eval"]["batch_size"]))
        eval_flops = count_eval(params, nets)
        for r in eval_rows:
            r.update({"section": "eval", "size": size, "hr": hr, "measured": True,
                      "ratio": r["fast"] / r["plain"] if r["fast"] else None,
                      "flops": eval_flops["sr"] if r["item"].startswith("SR") else next(
                          (v for k, v in eval_flops.items() if r["item"].startswith(f"LPIPS {k[6:]} ")), None)})
            rows.append(r)
        per_size[size] = (label, params, train_rows, eval_rows, eval_flops)

        # -- the whole configuration of this size on the measured device
        plan, n_test = run_plan(params)
        # every dataset trains and scores each strategy once per seed
        n_sets, n_seeds = len(params["datasets"]), len(seed_list(params["train"]))
        mode = "fast" if auto_fast else "plain"
        best = lambda r: max(r["plain"], r["fast"])
        t_auto = n_sets * n_seeds * sum(n / train_rows[item][mode] for item, n, _ in plan)
        t_best = n_sets * n_seeds * sum(n / best(train_rows[item]) for item, n, _ in plan)
        full = eval_rows[0]
        t_eval = n_seeds * n_test / (full["fast"] or full["plain"])
        est_note = "" if all(r["measured"] for r in train_rows.values()) else \
            " (strategies not timed at this size estimated from their FLOPs)"
        estimates.append(
            f"- **{size}** configuration ({n_sets} datasets x {n_seeds} seeds x {len(plan)} training runs incl. "
            f"the auto-encoder pre-training, {plan[0][1] if plan else 0} iterations each, {n_test} test images) on this {device.type}: "
            f"training {fmt_seconds(t_auto)} with train.fast=auto ({mode} path), {fmt_seconds(t_best)} with the faster "
            f"path per strategy; evaluation {fmt_seconds(t_eval)}; total about {fmt_seconds(t_auto + t_eval)}"
            f"{est_note}. Excludes download, crop, report and process start-up.")
        # -- the H100 estimate (from FLOPs, never measured here)
        h_fast = n_sets * n_seeds * sum(n / train_rows[item]["h100_fast"] for item, n, _ in plan)
        h_plain = n_sets * n_seeds * sum(n / train_rows[item]["h100_plain"] for item, n, _ in plan)
        gpu_eval = sum(eval_flops.values()) * (len(TRAINED) + 1) / (H100_EFFICIENCY * H100_PEAK["tf32"])
        h_eval = n_seeds * n_test * gpu_eval
        lowlevel = next(r for r in eval_rows if r["item"] == TORCH_METRICS)
        cpu_metrics = (len(TRAINED) + 1) / lowlevel["fast"]    # per test image, this device, batched
        total_flops = n_sets * n_seeds * sum(n * train_rows[item]["flops"] for item, n, _ in plan)
        estimates.append(
            f"- **{size}** configuration on one H100 SXM (ESTIMATE from FLOP counts, not measured): "
            f"{total_flops / 1e15:.1f} PFLOP of training; at {H100_EFFICIENCY:.0%} of the bf16 dense peak "
            f"({H100_PEAK['bf16'] / 1e12:.0f} TFLOP/s) and {LAUNCH_S * 1e6:.0f} us per op launch, training takes "
            f"about {fmt_seconds(h_fast)} on the fast path vs {fmt_seconds(h_plain)} eager fp32/TF32 "
            f"(x{h_plain / h_fast:.1f}); evaluation about {fmt_seconds(h_eval)} plus the low-level metrics, "
            f"float64 on the GPU (not estimated: no FLOP count; batched on this {device.type} they take "
            f"{fmt_seconds(n_seeds * n_test * cpu_metrics)}); total about {fmt_seconds(h_fast + h_eval)}.")

    args.out.mkdir(parents=True, exist_ok=True)
    env["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    slug = device_slug(device)
    write_csv(args.out / f"results-{slug}.csv", rows, env)
    md = render_markdown(env, per_size, estimates, weight_notes, args, auto_fast)
    tmp = args.out / f".results-{slug}.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, args.out / f"results-{slug}.md")
    print(md)
    return 0


CSV_COLUMNS = ("section", "size", "hr", "batch", "item", "unit", "plain", "fast", "ratio", "bf16", "compiled",
               "compile_s", "break_even", "measured", "flops", "ops", "plain_of_peak", "fast_of_peak", "h100_plain",
               "h100_fast", "warmup", "iters", "device", "torch", "cuda", "threads", "fast_precision", "native_bf16",
               "matmul_fp32", "matmul_bf16", "matmul_n", "load_average_start", "load_average_end")


def write_csv(path: Path, rows: list[dict], env: dict) -> None:
    """One CSV row per measurement, the environment repeated on each (same writer as the training logs)."""
    train_write_csv(path, list(CSV_COLUMNS), [{**r, **env} for r in rows])


def render_markdown(env: dict, per_size: dict, estimates: list[str], notes: list[str], args, auto_fast: bool) -> str:
    out = [f"# gcn-bench speed: {env['device']}", "",
           f"- torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}",
           f"- {env['threads']} torch threads on {env['cpus']} CPUs; load average (1, 5, 15 min) "
           f"{env['load_average_start']} at start, {env['load_average_end']} at end; {env['date']}",
           f"- command: `python bench/bench.py {' '.join(sys.argv[1:]) if sys.argv[0].endswith('bench.py') else ''}`".rstrip(),
           f"- train.fast=auto selects the **{'fast' if auto_fast else 'plain'}** path on this device, in "
           f"**{env['fast_precision']}** (native bf16 arithmetic: {'yes' if env['native_bf16'] else 'no'}). "
           "plain = host batches, loss read back every step, contiguous fp32; fast = pipeline.training.fast "
           "(crops on the device, channels_last, grouped loss read-back; bf16 autocast on CUDA and on CPUs with "
           "native bf16; on CUDA also fused Adam and cuDNN autotuning).",
           f"- Matmul ceilings measured in this run ({env['matmul_n']}^3 products, median of 5): fp32 "
           f"{env['matmul_fp32'] / 1e9:.1f} GFLOP/s, bf16 {env['matmul_bf16'] / 1e9:.1f} GFLOP/s. `% peak` = a "
           "path's achieved GFLOP/s over the ceiling of its precision (plain: fp32).",
           "- Synthetic random uint8 crops; weights from pipeline.nets.weights (cache). GFLOP = multiply-adds x 2 of "
           "convolutions and matmuls (torch.utils.flop_counter), forward and backward; ops = aten ops per iteration "
           "(about one kernel launch each on CUDA).", ""]
    out += [f"- {n}" for n in notes]
    for size, (label, params, train_rows, eval_rows, _) in per_size.items():
        r0 = next(iter(train_rows.values()))
        out += ["", f"## Training, {label}", "",
                f"{r0['warmup']} warm-up + {r0['iters']} timed iterations per strategy and path. "
                "Rows marked * were not timed at this size: their rates are estimated from their FLOPs.", "",
                "| strategy | GFLOP/it | ops/it | plain it/s | fast it/s | fast/plain | plain GFLOP/s | fast GFLOP/s "
                "| plain % peak | fast % peak "
                + ("| fast bf16 it/s " if args.bf16 else "")
                + ("| compiled it/s | compile s | break-even it " if args.compile else "")
                + "| H100 est. plain it/s | H100 est. fast it/s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if args.bf16 else "")
                + ("---:|---:|---:|" if args.compile else "") + "---:|---:|"]
        for item, r in train_rows.items():
            star = "" if r["measured"] else " *"
            gf = lambda rate: "n/a" if rate is None else f"{rate * r['flops'] / 1e9:.1f}"
            pct = lambda share: "n/a" if share is None else f"{100 * share:.1f}%"
            out.append(f"| {item}{star} | {r['flops'] / 1e9:.1f} | {r['ops']} | {fmt(r['plain'])} | {fmt(r['fast'])} | "
                       f"{fmt(r['ratio'])} | {gf(r['plain'])} | {gf(r['fast'])} | "
                       f"{pct(r.get('plain_of_peak'))} | {pct(r.get('fast_of_peak'))} | "
                       + (f"{fmt(r.get('bf16'))} | " if args.bf16 else "")
                       + (f"{fmt(r.get('compiled'))} | {fmt(r.get('compile_s'))} | {fmt(r.get('break_even'))} | "
                          if args.compile else "")
                       + f"{fmt(r['h100_plain'])} | {fmt(r['h100_fast'])} |")
        out += ["", f"## Evaluation, {label}", "",
                f"{eval_rows[0].get('batch')} images per batch (eval.batch_size, capped by the number of images) "
                "vs one image at a time.", "",
                "| part | GFLOP/image | one at a time | batched | batched/one | unit |", "|---|---:|---:|---:|---:|---|"]
        for r in eval_rows:
            gfl = "" if r.get("flops") is None else f"{r['flops'] / 1e9:.2f}"
            out.append(f"| {r['item']} | {gfl} | {fmt(r['plain'])} | {fmt(r['fast'])} | {fmt(r['ratio'])} | {r['unit']} |")
    out += ["", "## Estimated wall time of whole configurations", ""] + estimates
    out += ["", f"H100 assumptions (not measurements): {H100_EFFICIENCY:.0%} of the datasheet dense peak "
            f"(bf16 {H100_PEAK['bf16'] / 1e12:.0f}, TF32 {H100_PEAK['tf32'] / 1e12:.0f} TFLOP/s) for 64-channel "
            f"convolutions at batch 10, {LAUNCH_S * 1e6:.0f} us of host time per eager op; the fast path overlaps "
            "launches with GPU work (max of the two), the plain path synchronises every step (sum). Evaluation on "
            "the GPU is fp32 (TF32), its low-level metrics float64 on the GPU too (pipeline.evaluation.metrics.batch_metrics).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
