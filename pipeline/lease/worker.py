"""A lease's jobs, each in a process of its own: ``python -m pipeline.lease.worker JOB SPEC.json``.

pipeline.lease starts them (the lease process itself never touches the GPU, so NVIDIA MPS can be
switched on and off between jobs). SPEC.json holds the job's arguments; the job writes its result as
JSON to the file named by the spec's ``result``.

- ``speed``: the speed table: every strategy that trains a generator (and the `rec` auto-encoder's
  pre-training step), eager fp32 (train.fast off) against the fast path, in this one process:
  median seconds per iteration over timed iterations after a warm-up (bench/bench.py's loop, CUDA
  events on CUDA), FLOPs per iteration (bench/bench.py's counter), and the bf16 matrix-product rate
  measured here, so each strategy's fast path is given as a fraction of it.
- ``probe``: one of several processes started at once; after its warm-up it waits at a barrier, then
  in each round it either times training steps for a fixed time or waits, so the lease measures what
  1, 2, ... processes at once (with MPS or without) do to each one's speed.
- ``train``: one planned run, exactly as pipeline.training.train.train_dataset trains it (the same training
  tensors, validation set, VGG19 record and inputs hash), its config.json then marked with the lease.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline import paths
from pipeline.device import choose_device
from pipeline.fileio import atomic_write_json, atomic_write_text, sha256_file
from pipeline.nets import weights
from pipeline.nets import strategies as registry
from pipeline.training import monitor
from pipeline.training.train import loss_weights, seed_params, train_strategy

REC_AE = "rec (auto-encoder pre-training)"
POLL_S = 0.01


def bench_module(repo: Path):
    """bench/bench.py of the working tree (the FLOP counter and the timing loop)."""
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from bench import bench

    return bench


def weights_for_timing(root: Path) -> tuple[dict, str]:
    """The loss backbones for the speed table: network -> (state_dict, record), the shipped ImageNet weights where
    they are here, else seeded random ones (speed does not depend on the values; no run is trained with them)."""
    networks = sorted({b for n in registry.NAMES for b in registry.get(n).backbones})
    resolved, notes = {}, []
    for network in networks:
        try:
            resolved[network] = weights.resolve(network, ("cache",), root)
            notes.append(f"{network}: ImageNet weights")
        except weights.WeightsUnavailable:
            resolved[network] = weights.random_weights(network)
            notes.append(f"{network}: random weights (timing only)")
    return resolved, "; ".join(notes)


# ---------------------------------------------------------------- speed

def speed(spec: dict) -> dict:
    """The speed table's numbers (module docstring)."""
    bench = bench_module(Path(spec["repo"]))
    params, device = spec["params"], choose_device(spec["params"]["train"].get("device", "auto"))
    warmup, iters = int(spec["warmup"]), int(spec["iters"])
    backbones, vgg_note = weights_for_timing(Path(spec["root"]))
    rows = []
    items = [(n, "main") for n in registry.NAMES if registry.get(n).trains_generator] + [(REC_AE, "rec")]
    for item, phase in items:
        name = "rec" if item == REC_AE else item
        row = {"item": item, "strategy": name, "phase": phase, "flops": bench.count_iteration(params, name, phase)["flops"]}
        for path, fast in (("plain", False), ("fast", True)):
            times = bench.training_step_times(params, name, fast, device, backbones, warmup, iters, phase)
            row[path] = statistics.median(times)
            row[f"{path}_spread"] = [min(times), max(times)]
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    size = int(spec["matmul_size"])
    return {"rows": rows, "matmul_bf16_flops": bench.matmul_rate(device, size, torch.bfloat16),
            "matmul_size": size, "warmup": warmup, "iters": iters, "vgg": vgg_note,
            "environment": bench.environment(device), "slug": bench.device_slug(device)}


# ---------------------------------------------------------------- probe

def _wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def probe(spec: dict) -> dict:
    """One probe process (module docstring): warm up, say ready, then time steps in the rounds it is part of."""
    started = time.monotonic()
    bench = bench_module(Path(spec["repo"]))
    params, device = spec["params"], choose_device(spec["params"]["train"].get("device", "auto"))
    barrier, index = Path(spec["barrier"]), int(spec["index"])
    chunk = int(spec["chunk"])
    # batch indices of this many steps are uploaded up front; later steps compute theirs (fast path's Batches)
    trainer, step = bench.training_setup(params, spec["strategy"], True, device, None, int(spec["table_steps"]))
    bench.run_steps(trainer, step, 1, int(spec["warmup"]), device)
    s = int(spec["warmup"]) + 1
    atomic_write_text(barrier / f"ready-{index}", f"{time.monotonic() - started:.3f}\n")
    rounds = []
    for r, procs in enumerate(spec["rounds"]):
        if not _wait_for(barrier / f"go-{r}", float(spec["timeout"])):
            break
        if index >= procs:
            continue
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < float(spec["seconds"]):
            bench.run_steps(trainer, step, s, s + chunk - 1, device)   # ends with a sync: the steps are done
            steps, s = steps + chunk, s + chunk
        rounds.append({"round": r, "procs": procs, "steps": steps, "step_s": (time.perf_counter() - start) / steps})
        atomic_write_text(barrier / f"done-{r}-{index}", "")
    return {"index": index, "startup_s": float((barrier / f"ready-{index}").read_text()), "rounds": rounds}


# ---------------------------------------------------------------- train

def train(spec: dict) -> dict:
    """One planned run into <root>/models/<dataset>/<slug>/seed-<k>/ (module docstring)."""
    started = time.monotonic()
    root, params, dataset = Path(spec["root"]), spec["params"], spec["dataset"]
    name, seed = spec["strategy"], int(spec["seed"])
    lr, hr = torch.load(spec["pairs"], mmap=True, weights_only=True)
    manifest_sha = sha256_file(root / paths.manifest_path(dataset))
    backbones = loss_weights([name], params, root)    # what train_dataset resolves: eval.weights_order
    device = choose_device(params["train"].get("device", "auto"))
    validation = monitor.validation_set(params, dataset, root, device)
    out_dir = root / paths.model_dir(dataset, registry.slug(name), seed)
    train_strategy(seed_params(params, seed), dataset, name, out_dir, (lr, hr), manifest_sha, backbones, None,
                   validation)
    config = json.loads((out_dir / "config.json").read_text())
    if config.get("inputs_hash") != spec["digest"]:
        raise RuntimeError(f"{out_dir}: inputs hash {config.get('inputs_hash')} differs from the planned {spec['digest']}")
    # which lease or campaign trained it, on what (not in the inputs hash)
    config.update(spec["record"] if "record" in spec else {"lease": spec["lease"]})
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2))
    return {"out_dir": str(out_dir), "wall_s": time.monotonic() - started, "train_s": config["seconds"],
            "d_wins": config.get("d_wins")}


JOBS = {"speed": speed, "probe": probe, "train": train}


def main(argv: list[str] | None = None) -> int:
    job, spec_path = (sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    atomic_write_json(Path(spec["result"]), JOBS[job](spec))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main())
