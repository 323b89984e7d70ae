"""`python -m pipeline.campaign`: the CPU campaign, whose finished runs accumulate in the model zoo.

    python -m pipeline.campaign                      # train the plan's runs the zoo lacks, in priority order
    python -m pipeline.campaign --deadline-h 3       # start only runs predicted to end within 3 hours
    python -m pipeline.campaign --status             # done / left, with the left runs' estimated time

`configs/campaign-plan.yaml` lists (dataset, strategy, seed) runs in priority order and names the profile
they train with (`configs/campaign.yaml`, an overlay on params.yaml). A run is done when the zoo holds a
completed result with the run's inputs hash (pipeline.training.train.inputs_hash). Every invocation prepares the
datasets (the download and crop stages' code), trains what is pending with `--jobs` single-thread
processes at once (the GPU bundle's train job: pipeline.lease.worker), and, the moment a run ends, writes it
into zoo/<dataset>/<slug>/seed-<k>/ (float16 generator, config.json with the inputs hash, precision and CPU,
logs) and rebuilds models/<dataset>/<slug>/seed-<k>/ from that zoo copy, so the models evaluated here are the
ones a fresh clone evaluates. A stop loses at most the runs in flight (they resume from their checkpoints).
After each run it rewrites zoo/index.csv, zoo/PLAN.md (what is left and its estimated time) and the profile's
`strategy` and `train.seeds`: the runs `dvc repro` can evaluate without training (the train stage takes a
model from the zoo when its inputs hash matches).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.config import validate
from pipeline.errors import ConfigError, UserError
from pipeline.fileio import atomic_write_bytes, atomic_write_text
from pipeline.lease.plan import Run, evaluable_selection, merge, read_overlay, zoo_dir
from pipeline.nets import strategies as registry
from pipeline.training.zoo import (ZOO, half_generator, holds, is_folder_name, restore_run, write_zoo,
                                   write_zoo_index)

PLAN = Path("configs/campaign-plan.yaml")
PLAN_KEYS = ("profile", "datasets", "jobs", "runs", "zoo")
WORK = Path(".campaign")          # job specs, logs and the training tensors of the runs in flight
# Seconds of one 1000-iteration, 48 px run on one thread of a 2-core CPU in fp32, before any run of the
# strategy has finished here (then the zoo's own measurements of the same precision replace them).
DEFAULT_SECONDS = {"mse": 600, "adv,mse": 1300, "srgan": 1500, "adv,rec": 1800, "dis": 1300, "rec": 1400,
                   "dis,rec": 2900, "adv": 1600}


@dataclass(frozen=True)
class Entry:
    """One planned run: a strategy and a seed on a dataset, kept in zoo/<folder>/ (the dataset's name, unless the
    plan names another folder)."""

    dataset: str
    run: Run
    folder: str = ""

    @property
    def zoo_folder(self) -> str:
        return self.folder or self.dataset

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.run.key}"


@dataclass
class Campaign:
    """configs/campaign-plan.yaml: the profile, the datasets, the jobs at once, the runs in priority order."""

    profile: Path
    datasets: list[str]
    jobs: int
    entries: list[Entry]
    source: Path = PLAN         # the plan file
    zoo: str | None = None      # the zoo folder of a one-dataset plan (its PLAN.md there too); None: zoo/<dataset>/

    @property
    def status_file(self) -> Path:
        return ZOO / self.zoo / "PLAN.md" if self.zoo else ZOO / "PLAN.md"


def load_campaign(path: Path = PLAN) -> Campaign:
    """Read and check the plan file (ConfigError naming the bad key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: plan file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = [k for k in raw if k not in PLAN_KEYS] if isinstance(raw, dict) else ["(not a mapping)"]
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown key; valid keys: {', '.join(PLAN_KEYS)}")
    missing = [k for k in ("profile", "datasets", "runs") if k not in raw]
    if missing:
        raise ConfigError(f"{path}: {missing[0]}: required")
    datasets = list(raw["datasets"])
    zoo = raw.get("zoo")
    if zoo is not None and (len(datasets) != 1 or not is_folder_name(zoo)):
        raise ConfigError(f"{path}: zoo: a folder name (letters, digits, - and _) for a plan of one dataset, got {zoo!r}")
    entries: list[Entry] = []
    for i, group in enumerate(raw["runs"]):
        if not isinstance(group, dict) or set(group) != {"seed", "strategies"}:
            raise ConfigError(f"{path}: runs[{i}]: must be a mapping with the keys seed and strategies")
        for dataset in datasets:      # dataset by dataset: a cut-short group leaves whole datasets done
            for name in registry.select(group["strategies"]):
                entry = Entry(dataset, Run(name, int(group["seed"])), zoo or "")
                if entry in entries:
                    raise ConfigError(f"{path}: runs[{i}]: {entry.key} is listed twice")
                entries.append(entry)
    jobs = int(raw.get("jobs", 2))
    if jobs < 1:
        raise ConfigError(f"{path}: jobs: must be a positive integer, got {jobs}")
    return Campaign(Path(raw["profile"]), datasets, jobs, entries, path, zoo)


def campaign_params(repo: Path, campaign: Campaign) -> dict:
    """params.yaml + the campaign profile, validated: what every run trains with."""
    params = merge(yaml.safe_load((Path(repo) / "params.yaml").read_text()), read_overlay(Path(repo) / campaign.profile))
    try:
        params = validate(params)
    except ConfigError as err:
        raise ConfigError(f"{campaign.profile}: {err}") from None
    absent = [d for d in campaign.datasets if d not in params["datasets"]]
    if absent:
        raise ConfigError(f"{campaign.profile}: datasets must include the campaign's {', '.join(absent)}")
    return params


# ---------------------------------------------------------------- what is done

def digests(params: dict, campaign: Campaign, root: Path) -> dict[Entry, str]:
    """Each run's inputs hash, as pipeline.training.train.train_dataset computes it (crops made here when missing)."""
    from pipeline.lease.bundle import ensure_crops
    from pipeline.training.train import inputs_hash, loss_weights, seed_params

    names = list(dict.fromkeys(e.run.strategy for e in campaign.entries))
    resolved = loss_weights(names, params, root)
    manifests = {d: ensure_crops(params, d, root) for d in campaign.datasets}
    out = {}
    for entry in campaign.entries:
        strategy = registry.get(entry.run.strategy)
        sha = {network: resolved[network][1]["sha256"] for network in strategy.backbones}
        out[entry] = inputs_hash(strategy, seed_params(params, entry.run.seed), manifests[entry.dataset], sha)
    return out


def zoo_config(root: Path, entry: Entry) -> dict | None:
    try:
        return json.loads((zoo_dir(root, entry.zoo_folder, entry.run) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def in_zoo(root: Path, entry: Entry, digest: str) -> bool:
    return holds(zoo_dir(root, entry.zoo_folder, entry.run), digest)


def estimate_seconds(root: Path, campaign: Campaign, precision: str) -> dict[str, float]:
    """Per strategy: the median training seconds of the zoo's runs in this precision, else DEFAULT_SECONDS
    (fp32; divided by 2.4 for bf16, the speed-up measured on a CPU with AMX)."""
    measured: dict[str, list[float]] = {}
    for entry in campaign.entries:
        config = zoo_config(root, entry)
        if config and config.get("completed") and config.get("precision") == precision:
            measured.setdefault(entry.run.strategy, []).append(float(config["seconds"]))
    factor = 1 / 2.4 if precision == "bf16" else 1.0
    return {name: statistics.median(measured[name]) if name in measured else DEFAULT_SECONDS.get(name, 1800) * factor
            for name in dict.fromkeys(e.run.strategy for e in campaign.entries)}


# ---------------------------------------------------------------- the zoo

def cpu_precision(params: dict) -> str:
    """The precision the campaign's runs train in on this CPU (`bf16` where it computes bf16 natively)."""
    import torch

    from pipeline.training import fast

    cpu = torch.device("cpu")
    return fast.precision(cpu, fast.resolve(params["train"].get("fast", "auto"), cpu))


def cpu_model() -> str:
    try:
        return next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()


def to_zoo(root: Path, entry: Entry) -> None:
    """A finished run of models/ into the zoo (float16 generator), then models/ rebuilt from that zoo copy."""

    run_dir = Path(root) / paths.model_dir(entry.dataset, entry.run.slug, entry.run.seed)
    dest = zoo_dir(root, entry.zoo_folder, entry.run)
    staged = Path(root) / WORK / "zoo-staging" / entry.key
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for name in ("config.json", "log.csv", "validation.csv", "pretrain_log.csv"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, staged / name)
    data, precision = half_generator(run_dir / "generator.pt")
    atomic_write_bytes(staged / "generator.pt", data)
    config = json.loads((staged / "config.json").read_text())
    atomic_write_text(staged / "config.json", json.dumps({**config, "stored_as": precision}, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    write_zoo(staged, dest)
    shutil.rmtree(staged)
    source = Path(root) / paths.raw_dir(entry.dataset) / "SOURCE.json"
    if source.is_file():      # every image's sha256, so a copy obtained another way can be checked
        record = {k: v for k, v in json.loads(source.read_text()).items() if k != "root"}   # root: this machine's
        atomic_write_text(Path(root) / ZOO / entry.zoo_folder / "SOURCE.json", json.dumps(record, indent=2) + "\n")
    if not entry.folder:      # models/<dataset>/ as a clone rebuilds it (a run kept in another zoo folder stays as trained)
        restore_run(Path(root), dest)


def write_status(root: Path, campaign: Campaign, done: set[Entry], seconds: dict[str, float], jobs: int) -> str:
    """zoo/PLAN.md (zoo/<folder>/PLAN.md for a plan with its own zoo folder): the plan's runs, done or left, the
    left ones with their estimated time; returns the text."""
    command = "python -m pipeline.campaign" + ("" if Path(campaign.source) == PLAN else f" --plan {campaign.source}")
    left = [e for e in campaign.entries if e not in done]
    total = sum(seconds[e.run.strategy] for e in left)
    lines = [f"# The CPU campaign's plan ({campaign.source})", "",
             f"{len(done)} of {len(campaign.entries)} runs in the zoo; {len(left)} left, estimated "
             f"{total / 3600:.1f} CPU-thread hours ({total / 3600 / jobs:.1f} h with {jobs} jobs at once). "
             "Estimates: the median training time of the zoo's runs of the same strategy and precision, else a "
             f"default. Continue with `{command}`.", "",
             "| priority | run | state | estimated minutes |", "|---:|---|---|---:|"]
    for i, entry in enumerate(campaign.entries, 1):
        state = "in the zoo" if entry in done else "left"
        minutes = "" if entry in done else f"{seconds[entry.run.strategy] / 60:.0f}"
        lines.append(f"| {i} | {entry.key} | {state} | {minutes} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(root) / campaign.status_file, text)
    return text


def update_profile(repo: Path, campaign: Campaign, done: set[Entry]) -> tuple[list[str], list[int]]:
    """The profile's `strategy` and `train.seeds`: the runs done on every dataset that `dvc repro` can evaluate."""
    from pipeline.lease.bundle import update_selection

    runs = list(dict.fromkeys(e.run for e in campaign.entries))
    done_runs = {(e.dataset, e.run) for e in done}
    everywhere = {run for run in runs if all((d, run) in done_runs for d in campaign.datasets)}
    strategy, seeds = evaluable_selection(everywhere, runs)
    update_selection(Path(repo) / campaign.profile, strategy, seeds)
    return strategy, seeds


# ---------------------------------------------------------------- training

def _start(root: Path, params: dict, entry: Entry, digest: str, campaign_id: str, precision: str):
    import torch

    from pipeline.data import imageset
    from pipeline.lease.machine import Job

    pairs = Path(root) / WORK / f"pairs-{entry.dataset}.pt"
    if not pairs.is_file():
        lr, hr, _ = imageset.load_pairs(entry.dataset, "train", Path(root))
        pairs.parent.mkdir(parents=True, exist_ok=True)
        torch.save((lr, hr), pairs.with_suffix(".tmp"))
        pairs.with_suffix(".tmp").replace(pairs)
    spec = {"repo": str(Path(root).resolve()), "root": str(Path(root).resolve()), "params": params,
            "dataset": entry.dataset, "strategy": entry.run.strategy, "seed": entry.run.seed, "digest": digest,
            "pairs": str(pairs.resolve()), "threads": 1,
            "record": {"campaign": {"id": campaign_id, "cpu": cpu_model(), "threads": 1, "precision": precision}}}
    label = f"train-{entry.dataset}-{entry.run.slug}-seed{entry.run.seed}"
    return Job("train", spec, Path(root) / WORK / "jobs", label, {"OMP_NUM_THREADS": "1"}, Path(root))


def train_pending(root: Path, repo: Path, params: dict, campaign: Campaign, digest_of: dict[Entry, str],
                  done: set[Entry], jobs: int, deadline_s: float | None, log) -> list[Entry]:
    """Train the pending runs, `jobs` at once, in priority order; each into the zoo as soon as it ends.

    Returns the runs that failed (their logs stay under .campaign/jobs/)."""
    precision = cpu_precision(params)
    campaign_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    pending = [e for e in campaign.entries if e not in done]
    running: list[tuple] = []
    failed: list[Entry] = []
    start = time.monotonic()
    while pending or running:
        seconds = estimate_seconds(root, campaign, precision)
        while len(running) < jobs and pending:
            fits = [e for e in pending if deadline_s is None
                    or time.monotonic() - start + seconds[e.run.strategy] * 1.15 <= deadline_s]
            if not fits:
                break
            entry = fits[0]
            pending.remove(entry)
            running.append((_start(root, params, entry, digest_of[entry], campaign_id, precision), entry))
            log(f"start {entry.key} ({precision}; estimated {seconds[entry.run.strategy] / 60:.0f} min)")
        if not running:
            break
        time.sleep(2.0)
        for item in list(running):
            job, entry = item
            code = job.poll()
            if code is None:
                continue
            running.remove(item)
            if code == 0 and job.result() is not None:
                to_zoo(root, entry)
                done.add(entry)
                refresh(root, repo, params, campaign, done, jobs)
                log(f"done {entry.key}: {job.seconds / 60:.1f} min, into {zoo_dir(root, entry.zoo_folder, entry.run)}")
            else:
                failed.append(entry)
                log(f"FAILED {entry.key} (exit {code}): {job.tail(3)}; log {job.log_path}")
    return failed


def refresh(root: Path, repo: Path, params: dict, campaign: Campaign, done: set[Entry], jobs: int) -> None:
    """zoo/index.csv, zoo/PLAN.md and the profile's evaluable selection, after a change of the zoo."""
    write_zoo_index(root)
    write_status(root, campaign, done, estimate_seconds(root, campaign, cpu_precision(params)), jobs)
    update_profile(repo, campaign, done)


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", type=Path, default=PLAN, help=f"the plan file (default {PLAN})")
    parser.add_argument("--jobs", type=int, default=None, help="training processes at once (default: the plan's)")
    parser.add_argument("--deadline-h", type=float, default=None,
                        help="start only runs predicted to end within this many hours (default: no deadline)")
    parser.add_argument("--status", action="store_true", help="print what is done and left; train nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: must be a positive integer, got {args.jobs}")
    if args.deadline_h is not None and args.deadline_h <= 0:
        raise UserError(f"--deadline-h: must be a positive number of hours, got {args.deadline_h}")
    root = repo = Path(".")
    campaign = load_campaign(args.plan)
    params = campaign_params(repo, campaign)
    jobs = args.jobs or campaign.jobs
    log = lambda message: print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)
    digest_of = digests(params, campaign, root)
    done = {e for e in campaign.entries if in_zoo(root, e, digest_of[e])}
    from pipeline.training.train import is_done

    for entry in campaign.entries:      # finished here before (e.g. by `dvc repro`) but not in the zoo yet
        run_dir = root / paths.model_dir(entry.dataset, entry.run.slug, entry.run.seed)
        if entry not in done and is_done(run_dir, digest_of[entry]):
            to_zoo(root, entry)
            done.add(entry)
            log(f"{entry.key}: finished before, now in the zoo")
    refresh(root, repo, params, campaign, done, jobs)
    if args.status:
        print((root / campaign.status_file).read_text())
        return 0
    log(f"campaign: {len(done)} of {len(campaign.entries)} runs in the zoo; training the rest, {jobs} at once")
    failed = train_pending(root, repo, params, campaign, digest_of, done, jobs,
                           None if args.deadline_h is None else args.deadline_h * 3600, log)
    left = [e for e in campaign.entries if e not in done]
    log(f"campaign: {len(done)} runs in the zoo, {len(left)} left ({campaign.status_file})"
        + (f"; {len(failed)} failed: {', '.join(e.key for e in failed)}" if failed else ""))
    return 1 if failed else 0

