"""A lease rehearsed on a CPU: `python -m pipeline.lease --rehearse --out DIR`.

The same code as the lease, end to end, at toy size (configs/lease-rehearsal.yaml on top of the profile):
prepare and check `.lease/` (pipeline.lease.carry), copy what goes to the GPU machine into a temporary
folder, run the GPU machine's part there (`python -m pipeline.lease --toy`) in a Python that cannot import
the packages the GPU machine lacks except from the shipped wheels (the import blocker), with bf16 autocast
on the CPU; check the bundle's limits; import it into a fresh project folder as a CPU would after a
lease; and check that pipeline.training.train.train_dataset finds every imported run up to date.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import paths
from pipeline.errors import UserError
from pipeline.lease import carry
from pipeline.lease.bundle import check_limits, import_bundle
from pipeline.lease.carry import LEASE_DIR
from pipeline.lease.plan import Plan, profile_params
from pipeline.nets import weights


def rehearse(repo: Path, out: Path, plan: Plan, deadline_s: float, keep: bool = False) -> int:
    """The lease end to end on this CPU at toy size, as the GPU machine would run it, then its import."""
    started = time.monotonic()
    real = profile_params(repo, plan)
    for line in carry.prepare(repo, plan, real):
        print(f"prepare: {line}")
    report = carry.preflight(repo, plan, real)
    print("pre-flight:\n" + carry.describe(report))
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lease-rehearsal-", dir=out.parent))   # the device copy, the import project
    try:
        device = tmp / "device"
        carry.copy_outbound(repo, device)
        env_vars = carry.write_blocker(tmp / "blocker", [device / LEASE_DIR / "site", device])
        env = {k: v for k, v in os.environ.items() if k not in ("GCN_BENCH_CACHE", "PYTHONPATH")}
        env.update(env_vars, PYTHONPATH=str(tmp / "blocker"), GCN_BENCH_CPU_BF16="1", OMP_NUM_THREADS="1",
                   PYTHONUNBUFFERED="1", DVC_NO_ANALYTICS="1")
        if out.exists():
            shutil.rmtree(out)
        command = [sys.executable, "-m", "pipeline.lease", "--deadline-s", str(deadline_s), "--out", str(out), "--toy"]
        print(f"device part, in {device} with the GPU machine's packages only: {' '.join(command[1:])}", flush=True)
        code = subprocess.run(command, cwd=device, env=env).returncode
        if code != 0:
            raise UserError(f"the rehearsal's device part exited {code}; see {out / 'lease.log'}")
        problems = check_limits(out)
        if problems:
            raise UserError(f"{out}: the bundle breaks the limits: {'; '.join(problems)}")
        root = tmp / "import"
        shutil.copytree(carry.data_dir(repo, plan.dataset), root / paths.raw_dir(plan.dataset))
        for archive in carry.weights_dir(repo).glob("*"):   # as the weights stage downloads it here
            weights.archives_dir(root).mkdir(parents=True, exist_ok=True)
            shutil.copy2(archive, weights.archives_dir(root) / archive.name)
        imported = import_bundle(out, repo, root, plan, rehearse=True)
        stale = not_up_to_date(profile_params(repo, plan, rehearse=True), plan.dataset, imported, root)
        if not imported or stale:
            raise UserError(f"after the import the trainer would retrain: {', '.join(stale) or 'no run imported'}")
        print(f"rehearsal passed in {time.monotonic() - started:.0f} s: bundle {out} within the limits, "
              f"{len(imported)} runs imported and found up to date by the trainer")
        return 0
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def not_up_to_date(params: dict, dataset: str, model_dirs: list[Path], root: Path) -> list[str]:
    """The runs among `model_dirs` that pipeline.training.train.train_dataset would train again (it is run on them)."""
    from pipeline.training.train import train_dataset

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("pipeline.training.train")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        by_seed: dict[int, list[str]] = {}
        for model_dir in model_dirs:
            config = json.loads((model_dir / "config.json").read_text())
            by_seed.setdefault(int(config["seed"]), []).append(config["strategy"])
        for seed, names in by_seed.items():
            train_dataset(params, dataset, names, root, seeds=[seed], curves=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return [str(d) for d in model_dirs if not any("up to date" in m and str(d) in m for m in messages)]
