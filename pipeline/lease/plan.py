"""The leases' plan: which (strategy, seed) runs, in which order, with which parameters; which are done; which fit.

`configs/lease-plan.yaml` lists the runs in priority order and names the profile whose parameters
they train with (`configs/paper-aerial.yaml`, an overlay on params.yaml, merged here with PyYAML
alone: the GPU machine has no ruamel.yaml). A run is done when a model folder or the committed model
zoo holds a completed result with the run's inputs hash (pipeline.training.train.inputs_hash), so each lease
continues where the last one stopped. The deadline planner starts a run only when its predicted
duration ends before the lease's deadline; a started run is never cut short.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from pipeline import paths
from pipeline.config import validate
from pipeline.errors import ConfigError
from pipeline.nets import strategies as registry
from pipeline.training.zoo import holds, is_folder_name, run_folder

PLAN = Path("configs/lease-plan.yaml")
PLAN_KEYS = ("dataset", "profile", "probe_strategy", "runs", "rehearsal", "zoo")
REHEARSAL_KEYS = ("overlay", "runs")


@dataclass(frozen=True)
class Run:
    """One planned training run: a strategy and a seed."""

    strategy: str
    seed: int

    @property
    def slug(self) -> str:
        return registry.slug(self.strategy)

    @property
    def key(self) -> str:
        """`<slug>/seed-<k>`, the run's folder under models/<dataset>/ and zoo/<folder>/."""
        return f"{self.slug}/seed-{self.seed}"


@dataclass
class Plan:
    """configs/lease-plan.yaml: the dataset, the profile overlay, the runs in priority order."""

    dataset: str
    profile: Path
    runs: list[Run]
    probe_strategy: str
    rehearsal_overlay: Path
    rehearsal_runs: list[Run] = field(default_factory=list)
    zoo: str | None = None      # the plan's zoo folder (zoo/<zoo>/); None: zoo/<dataset>/

    def runs_for(self, rehearse: bool) -> list[Run]:
        return self.rehearsal_runs if rehearse else self.runs

    @property
    def zoo_folder(self) -> str:
        """The folder under zoo/ that keeps this plan's runs: a profile of its own does not share the campaign's."""
        return self.zoo or self.dataset


def _runs(entries: object, where: str) -> list[Run]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: must be a non-empty list of {{seed, strategies}} entries")
    runs: list[Run] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"seed", "strategies"}:
            raise ConfigError(f"{where}[{i}]: must be a mapping with the keys seed and strategies")
        seed = entry["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{where}[{i}].seed: must be a non-negative integer, got {seed!r}")
        for name in registry.select(entry["strategies"]):
            if not registry.get(name).trains_generator:
                raise ConfigError(f"{where}[{i}]: {name} trains nothing; list only strategies that train a generator")
            run = Run(name, seed)
            if run in runs:
                raise ConfigError(f"{where}[{i}]: {name} seed {seed} is listed twice")
            runs.append(run)
    return runs


def load_plan(path: Path = PLAN) -> Plan:
    """Read and check the plan file (ConfigError naming the bad key)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: plan file not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping")
    for key in raw:
        if key not in PLAN_KEYS:
            raise ConfigError(f"{path}: {key}: unknown key; valid keys: {', '.join(PLAN_KEYS)}")
    for key in ("dataset", "profile", "runs", "rehearsal"):
        if key not in raw:
            raise ConfigError(f"{path}: {key}: required")
    rehearsal = raw["rehearsal"]
    if not isinstance(rehearsal, dict) or set(rehearsal) != set(REHEARSAL_KEYS):
        raise ConfigError(f"{path}: rehearsal: must be a mapping with the keys {', '.join(REHEARSAL_KEYS)}")
    probe = registry.select(raw.get("probe_strategy", "adv"))[0]
    zoo = raw.get("zoo")
    if zoo is not None and not is_folder_name(zoo):
        raise ConfigError(f"{path}: zoo: a folder name (letters, digits, - and _), got {zoo!r}")
    return Plan(str(raw["dataset"]), Path(raw["profile"]), _runs(raw["runs"], "runs"), probe,
                Path(rehearsal["overlay"]), _runs(rehearsal["runs"], "rehearsal.runs"), zoo and str(zoo))


# ---------------------------------------------------------------- parameters

def merge(base: dict, overlay: dict) -> dict:
    """`overlay` merged into a copy of `base`: mappings are merged, lists and values replaced.

    The same result as pipeline.config.apply_overlay (`python stages/configure.py`), without ruamel.yaml.
    """
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_overlay(path: Path) -> dict:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: overlay file not found")
    overlay = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(overlay, dict):
        raise ConfigError(f"{path}: must be a mapping of parameters")
    return overlay


def profile_params(repo: Path, plan: Plan, rehearse: bool = False) -> dict:
    """params.yaml + the plan's profile (+ the rehearsal overlay): what the lease trains with.

    After `python stages/configure.py <profile>`, the train stage reads the same values (tested).
    """
    repo = Path(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    overlays = [plan.profile] + ([plan.rehearsal_overlay] if rehearse else [])
    for overlay in overlays:
        params = merge(params, read_overlay(repo / overlay))
    try:
        params = validate(params)
    except ConfigError as err:
        raise ConfigError(f"{' + '.join(map(str, overlays))}: {err}") from None
    if plan.dataset not in params["datasets"]:
        raise ConfigError(f"{plan.profile}: datasets must include the plan's dataset {plan.dataset!r}")
    return params


SHIPPED_BACKBONES = ("vgg19",)   # the only ImageNet backbone with an offline source small enough to ship


def needs_vgg19(name: str) -> bool:
    """Whether a strategy's loss uses the ImageNet VGG19 (which then has to be shipped)."""
    return "vgg19" in registry.get(name).backbones


def run_digest(params: dict, run: Run, manifest_sha256: str, vgg_sha256: str | None) -> str:
    """The run's inputs hash, as pipeline.training.train.train_dataset computes it for that strategy and seed."""
    from pipeline.training.train import inputs_hash, seed_params   # late import: torch

    strategy = registry.get(run.strategy)
    missing = [b for b in strategy.backbones if b not in SHIPPED_BACKBONES]
    if missing:
        raise ConfigError(f"{run.key}: its loss needs {', '.join(missing)} weights, which a lease cannot ship; "
                          f"plan strategies whose backbones are among: {', '.join(SHIPPED_BACKBONES)}")
    return inputs_hash(strategy, seed_params(params, run.seed), manifest_sha256,
                       {"vgg19": vgg_sha256} if needs_vgg19(run.strategy) else None)


# ---------------------------------------------------------------- what is done

def zoo_dir(root: Path, folder: str, run: Run) -> Path:
    """zoo/<folder>/<slug>/seed-<k>/ (the folder: Plan.zoo_folder)."""
    return run_folder(root, folder, run.slug, run.seed)


def _config(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def in_zoo(root: Path, folder: str, run: Run, digest: str) -> bool:
    """The committed zoo folder holds a completed result of the run's inputs."""
    return holds(zoo_dir(root, folder, run), digest)


def is_imported(root: Path, plan: Plan, run: Run, digest: str) -> bool:
    """A completed result of the run's inputs in models/<dataset>/ or in the plan's zoo folder."""
    from pipeline.training.train import is_done   # late import: torch

    return (is_done(Path(root) / paths.model_dir(plan.dataset, run.slug, run.seed), digest)
            or in_zoo(root, plan.zoo_folder, run, digest))


def pending_runs(runs: list[Run], digests: dict[Run, str], root: Path, plan: Plan) -> list[Run]:
    """The plan's runs, in order, without those already imported (models/ or zoo/ with the same inputs hash)."""
    return [run for run in runs if not is_imported(root, plan, run, digests[run])]


def zoo_matches(root: Path, folder: str, run: Run, params: dict) -> bool:
    """Whether the zoo holds the run trained with these parameters (all the inputs hash covers but the data
    and VGG19 files; enough to decide what a lease must ship, before the crops exist)."""
    from pipeline.training.train import MONITOR_KEYS, seed_params

    config = _config(zoo_dir(root, folder, run))
    if not config or not config.get("completed"):
        return False
    wanted = {k: v for k, v in seed_params(params, run.seed)["train"].items() if k not in MONITOR_KEYS}
    have = {k: v for k, v in config.get("train", {}).items() if k not in MONITOR_KEYS}
    return have == json.loads(json.dumps(wanted)) and config.get("crop") == params["crop"]


# ---------------------------------------------------------------- the deadline planner

@dataclass
class Estimate:
    """Predicted wall seconds of one run on the lease's device, from the first steps timed there.

    `step_seconds[strategy]`: one main iteration alone on the device (fast path, median); `rec_step`:
    one step of the `rec` auto-encoder trained beforehand; `slowdown`: how much slower each process
    runs with the chosen number of processes at once; `overhead_s`: process start, data, networks,
    validation passes and checkpoints; `correction`: measured / predicted of the runs finished so far.
    """

    step_seconds: dict[str, float]
    rec_step: float
    slowdown: float = 1.0
    overhead_s: float = 10.0
    correction: float = 1.0
    margin: float = 1.15

    def work(self, strategy: str, train: dict) -> float:
        """Seconds of the run's steps alone on the device (no overhead, slowdown or margin)."""
        from pipeline.training.train import phases   # late import: torch

        steps = dict(phases(registry.get(strategy), train))
        return steps["rec"] * self.rec_step + (steps["pretrain_mse"] + steps["main"]) * self.step_seconds[strategy]

    def seconds(self, strategy: str, train: dict) -> float:
        return self.overhead_s + self.margin * self.correction * self.slowdown * self.work(strategy, train)


def choose_next(pending: list[Run], seconds_of: Callable[[Run], float], now: float, deadline: float) -> Run | None:
    """The first pending run (priority order) predicted to finish by the deadline, or None."""
    for run in pending:
        if now + seconds_of(run) <= deadline:
            return run
    return None


def simulate(pending: list[Run], seconds_of: Callable[[Run], float], slots: int, start: float,
             deadline: float) -> tuple[list[tuple[Run, float, float]], list[Run]]:
    """What the lease would start: (run, start, predicted end) in start order, and the runs left out.

    The earliest free slot takes `choose_next` at the time it frees; when nothing fits then, nothing fits
    later either (the durations do not shrink), so the simulation ends.
    """
    free = [float(start)] * max(1, int(slots))
    left, started = list(pending), []
    while left:
        free.sort()
        now = free[0]
        run = choose_next(left, seconds_of, now, deadline)
        if run is None:
            break
        left.remove(run)
        end = now + seconds_of(run)
        started.append((run, now, end))
        free[0] = end
    return started, left


def pick_setting(options: list[dict], pending: list[Run], seconds_for: Callable[[dict], Callable[[Run], float]],
                 now: float, deadline: float) -> dict:
    """The setting (processes at once, MPS or not) under which the most pending runs finish by the deadline.

    Each option has `procs` and `speedup` (throughput against one process); `seconds_for(option)` predicts a
    run's seconds under it. Ties: the higher throughput, then the fewer processes. More processes raise the
    throughput but slow each run down, so near the deadline fewer may finish more runs.
    """
    def score(option: dict) -> tuple:
        started, _ = simulate(pending, seconds_for(option), option["procs"], now, deadline)
        return len(started), round(option["speedup"], 2), -option["procs"]

    return max(options, key=score)


def evaluable_selection(done: set[Run], runs: list[Run]) -> tuple[list[str], list[int]]:
    """The `strategy` list and `train.seeds` that `dvc repro` can evaluate without training anything.

    The train and evaluate stages take every selected strategy with every seed, so this is the cross
    product of done runs with the most runs (ties: more seeds); bicubic (untrained) always comes along.
    """
    seeds = sorted({run.seed for run in runs})
    best: tuple[int, int, list[str], list[int]] = (0, 0, [], [0])
    for n in range(1, len(seeds) + 1):
        chosen = seeds[:n]
        names = [s for s in dict.fromkeys(r.strategy for r in runs) if all(Run(s, k) in done for k in chosen)]
        score = (len(names) * len(chosen), len(chosen))
        if names and score >= best[:2]:
            best = (*score, names, chosen)
    order = {name: i for i, name in enumerate(registry.NAMES)}
    return ["bicubic"] + sorted(best[2], key=order.get), best[3]
