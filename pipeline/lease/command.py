"""`python -m pipeline.lease`: training on a GPU machine that has no network or a time limit (an air-gapped
node, a spot instance), in one command there, with its preparation, rehearsal and import here.

    python -m pipeline.lease --prepare                # fill .lease/ (wheels, VGG19 archive, aerial images)
    python -m pipeline.lease --preflight              # what goes to the GPU machine and its size; exit 2 if not ready
    python -m pipeline.lease --rehearse --out DIR     # the whole lease on this CPU at toy size, then its import
    python -m pipeline.lease --deadline-s 420 --out DIR   # on the GPU machine: the lease, its bundle into DIR
    python -m pipeline.lease --import DIR             # a returned bundle into models/ and the zoo
    python -m pipeline.lease --restore                # models/ rebuilt from the zoo (a fresh clone)

A lease is one run on the GPU machine, within a deadline (docs/gpu-bundle.md). It runs in one process that
never touches the GPU itself: install the shipped wheels and check that monitoring works; crop the plan's dataset at the profile's size with the crop
stage's code and count the disjoint test squares; time every strategy, eager fp32 against the fast
path, in one job process (the speed table); time several job processes at once, without and with
NVIDIA MPS, and keep the fastest setting; then start, in the plan's order, each run not imported yet
whose predicted duration ends before the deadline (a started run is never cut short); pack every
finished run into the bundle at once. `--rehearse` runs exactly that on a copy of what is shipped, in a
process that cannot import what the GPU machine lacks, at toy size, then imports the bundle into a
fresh project folder and checks that the trainer finds every run up to date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import time
import traceback
from pathlib import Path

from pipeline import cli, paths
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_text, sha256_file
from pipeline.lease.bundle import Bundle, check_limits, save_lease_record
from pipeline.lease.carry import LEASE_DIR
from pipeline.lease.plan import (PLAN, Estimate, Plan, Run, choose_next, load_plan, needs_vgg19, pick_setting, profile_params,
                                 run_digest, simulate)

DEFAULT_DEADLINE_S = 420.0
REHEARSAL_DEADLINE_S = 3600.0  # the toy runs take seconds, but a CPU busy with other work must not leave one out
CUDA_PROCS = (1, 2, 4, 8)       # processes tried at once on a GPU (MPS: the same but 1)
CPU_PROCS = (1, 2)
PROBE_SECONDS = {"cuda": 2.0, "cpu": 1.0}
SPEED_STEPS = {"cuda": (3, 10), "cpu": (1, 1)}     # warm-up and timed iterations per strategy and path
MATMUL_SIZE = {"cuda": 8192, "cpu": 256}
RUN_BYTES_GUESS = 4 * 2 ** 20   # bundle room kept per running run until one has been packed
MIB = 2 ** 20


class Clock:
    """Seconds since the lease started, against its deadline."""

    def __init__(self, deadline_s: float) -> None:
        self.start, self.deadline = time.monotonic(), float(deadline_s)

    def now(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - self.now()


class LeaseLog:
    """Lines on stdout and in the bundle's lease.log, stamped with the lease's clock."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path, self.clock = path, clock
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, message: str) -> None:
        line = f"[{self.clock.now():6.1f}s] {message}"
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


# ---------------------------------------------------------------- the device run

def run_device(repo: Path, out: Path, plan: Plan, deadline_s: float, toy: bool, procs: tuple[int, ...] | None,
               use_mps: bool) -> int:
    """The lease on this machine (module docstring); its bundle in `out`. Returns the exit code."""
    from pipeline.lease import carry
    from pipeline.lease.machine import MPS

    clock = Clock(deadline_s)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("runs-*.tar.gz"), *out.glob("bench/results-*.md")]:
        stale.unlink()           # a bundle of an earlier run in the same folder
    log = LeaseLog(out / "lease.log", clock)
    lease_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{carry.tree_digest(repo)}"
    record = {"id": lease_id, "toy": toy, "plan": str(plan.profile), "dataset": plan.dataset, "deadline_s": deadline_s,
              "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    work = repo / LEASE_DIR / "work"
    shutil.rmtree(work, ignore_errors=True)
    mps = MPS(work / "mps")
    code = 0
    try:
        _lease(repo, out, work, plan, clock, log, record, toy, procs, use_mps, mps)
    except UserError as err:
        record["error"] = str(err)
        log(f"error: {err}")
        code = cli.EXIT_USER_ERROR
    except Exception as err:  # the lease still writes its record and returns what finished
        record["error"] = f"{type(err).__name__}: {err}"
        log("failed:\n" + traceback.format_exc())
        code = 1
    finally:
        mps.stop()
        record["seconds"] = round(clock.now(), 1)
        save_lease_record(out, record)
        problems = check_limits(out)
        record["bundle_problems"] = problems
        log(f"bundle {out}: " + ("within the limits (8 files, 16 MiB each, 64 MiB, plain names, 2 folders)"
                                 if not problems else "; ".join(problems)))
        save_lease_record(out, record)
    return code if not record["bundle_problems"] else (code or 1)


def _lease(repo: Path, out: Path, work: Path, plan: Plan, clock: Clock, log: LeaseLog, record: dict, toy: bool,
           procs: tuple[int, ...] | None, use_mps: bool, mps) -> None:
    from pipeline.lease import machine

    params = profile_params(repo, plan, rehearse=toy)
    log(f"lease {record['id']}: {plan.profile}{' + ' + str(plan.rehearsal_overlay) if toy else ''}, "
        f"deadline {clock.deadline:.0f} s")
    wheels = machine.install_wheels(repo, repo / LEASE_DIR / "site")
    record["packages"] = machine.check_monitoring(work)
    log(f"set-up: {len(wheels)} shipped wheels installed; DVCLive writes, lpips imports "
        f"({', '.join(f'{k} {v}' for k, v in record['packages'].items())})")

    import torch

    from pipeline.device import choose_device

    # this process creates no CUDA context (is_available does not): MPS may start later for the job processes
    kind = choose_device(params["train"].get("device", "auto")).type
    atomic_write_text(out / "environment.txt", machine.environment_text(
        {"torch": torch.__version__, "cuda": str(torch.version.cuda)}, record["packages"], record["id"]))
    vgg_record = machine.prepare_root(repo, plan.dataset)
    log(f"device {kind}; VGG19 {'converted from ' + vgg_record['source'] if vgg_record else 'not shipped'}")

    manifest_sha = _crop(repo, params, plan, record, log)
    runs = plan.runs_for(toy)
    vgg_sha = vgg_record["sha256"] if vgg_record else None
    trainable = [r for r in runs if vgg_sha or not needs_vgg19(r.strategy)]
    if len(trainable) < len(runs):
        log(f"not trainable without the VGG19 archive: {', '.join(r.key for r in runs if r not in trainable)}")
    digests = {run: run_digest(params, run, manifest_sha, vgg_sha) for run in trainable}
    bundle = Bundle(out)
    pending = _pending(repo, plan, trainable, digests, bundle, record, log)

    lr, hr, _ = _load_pairs(repo, plan.dataset)
    pairs = work / "train-pairs.pt"
    pairs.parent.mkdir(parents=True, exist_ok=True)
    torch.save((lr, hr), pairs)
    base = {"repo": str(repo.resolve()), "root": str(repo.resolve()), "params": params}
    threads = max(1, (os.cpu_count() or 1) // max(procs or CUDA_PROCS)) if kind == "cuda" else 1
    speed = _speed_table(work, base, kind, clock, log, record, out, threads)
    gpu = speed["environment"]["device"].split(": ", 1)[-1] if kind == "cuda" else "cpu"
    record["device"] = {"type": kind, "name": gpu, "torch": torch.__version__, "cuda": torch.version.cuda}
    probe = _processes(work, base, plan, kind, procs, use_mps, mps, speed, clock, log, record, threads)

    step_seconds = {row["strategy"]: row["fast"] for row in speed["rows"] if row["phase"] == "main"}
    rec_step = next(row["fast"] for row in speed["rows"] if row["phase"] == "rec")
    estimate_for = lambda option: Estimate(step_seconds, rec_step, option["slowdown"], probe["overhead_s"])
    seconds_for = lambda option: (lambda run: estimate_for(option).seconds(run.strategy, params["train"]))
    chosen = pick_setting(probe["options"], pending, seconds_for, clock.now(), clock.deadline)
    if chosen["mode"] != "MPS":
        mps.stop()
    record["processes"]["chosen"] = chosen
    _append_processes(out, record)
    estimate = estimate_for(chosen)
    started, left = simulate(pending, seconds_for(chosen), chosen["procs"], clock.now(), clock.deadline)
    record["forecast"] = {"start": [r.key for r, _, _ in started], "left": [r.key for r in left]}
    log(f"processes: chosen {chosen['mode']} x{chosen['procs']} (each run {chosen['slowdown']:.2f}x slower than "
        f"alone); forecast: {len(started)} of {len(pending)} pending runs end by the deadline "
        f"({', '.join(r.key for r, _, _ in started) or 'none'})")
    lease = {"id": record["id"], "gpu": gpu, "processes": chosen["procs"], "mps": chosen["mode"] == "MPS"}
    threads = max(1, (os.cpu_count() or 1) // chosen["procs"]) if kind == "cuda" else 1
    job_env = {**(mps.env if lease["mps"] else {}), "OMP_NUM_THREADS": str(threads)}

    def start(run: Run):
        from pipeline.lease.machine import Job

        spec = {**base, "dataset": plan.dataset, "strategy": run.strategy, "seed": run.seed, "digest": digests[run],
                "pairs": str(pairs.resolve()), "lease": lease, "threads": threads}
        return Job("train", spec, work / "jobs", f"train-{run.slug}-seed{run.seed}", job_env, repo)

    def finished(run: Run, result: dict) -> None:
        run_dir = repo / paths.model_dir(plan.dataset, run.slug, run.seed)
        packed = bundle.add(run_dir, f"{plan.dataset}/{run.key}")
        record["runs"][run.key].update(packed=packed, train_s=result["train_s"], d_wins=result.get("d_wins"))
        log(f"  {run.key}: packed into the bundle ({bundle.room() / MIB:.1f} MiB left)" if packed
            else f"  {run.key}: NOT packed: no room left in the bundle")

    _train(pending, estimate, params["train"], chosen["procs"], clock, start, finished, bundle, record, log)


def _crop(repo: Path, params: dict, plan: Plan, record: dict, log: LeaseLog) -> str:
    from pipeline.data import crop

    info = crop.crop_dataset(params, plan.dataset, repo)
    regions, shapes = crop.region_shapes(params, plan.dataset, repo)
    squares = crop.disjoint_squares(regions, shapes, int(params["crop"]["hr_size"]))
    manifest_sha = sha256_file(repo / paths.manifest_path(plan.dataset))
    record["data"] = {"counts": info["counts"], "disjoint_squares": squares, "manifest_sha256": manifest_sha,
                      "hr_size": info["hr_size"], "seconds": info["seconds"]}
    log(f"crops: {info['counts']['train']} train / {info['counts']['test']} test at {info['hr_size']} px "
        f"({info['seconds']:.0f} s); the test regions hold {squares['test']} disjoint squares: the test crops are "
        f"worth at most {min(squares['test'], info['counts']['test'])} independent images")
    return manifest_sha


def _pending(repo: Path, plan: Plan, trainable: list[Run], digests: dict, bundle: Bundle, record: dict,
             log: LeaseLog) -> list[Run]:
    """The runs to train; runs finished on this machine by an earlier call but not imported go into the bundle."""
    from pipeline.lease.plan import in_zoo
    from pipeline.training.train import is_done

    record["runs"], pending = {}, []
    for run in trainable:
        model = repo / paths.model_dir(plan.dataset, run.slug, run.seed)
        if in_zoo(repo, plan.zoo_folder, run, digests[run]):
            record["runs"][run.key] = {"status": "imported before"}
        elif is_done(model, digests[run]):
            packed = bundle.add(model, f"{plan.dataset}/{run.key}")
            record["runs"][run.key] = {"status": "finished by an earlier call", "packed": packed}
        else:
            record["runs"][run.key] = {"status": "pending"}
            pending.append(run)
    done = [k for k, v in record["runs"].items() if v["status"] != "pending"]
    log(f"plan: {len(trainable)} runs, {len(done)} done before ({', '.join(done) or 'none'}), {len(pending)} pending")
    return pending


def _load_pairs(repo: Path, dataset: str):
    from pipeline.data import imageset

    return imageset.load_pairs(dataset, "train", repo)


def _speed_table(work: Path, base: dict, kind: str, clock: Clock, log: LeaseLog, record: dict,
                 out: Path, threads: int) -> dict:
    from pipeline.lease.machine import Job

    warmup, iters = SPEED_STEPS[kind]
    log(f"speed table: every strategy, eager fp32 vs fast, {warmup} warm-up + {iters} timed iterations each ...")
    job = Job("speed", {**base, "warmup": warmup, "iters": iters, "matmul_size": MATMUL_SIZE[kind], "threads": threads},
              work / "jobs", "speed", cwd=Path(base["repo"]))
    if job.wait(timeout=max(60.0, clock.left())) != 0 or job.result() is None:
        raise UserError(f"the speed table job failed: {job.tail()}")
    speed = job.result()
    name = "results-cpu-rehearsal.md" if kind == "cpu" else f"results-{speed['slug']}.md"
    text = render_speed(speed, record, base["params"])
    atomic_write_text(out / "bench" / name, text)
    record["speed"] = {"file": f"bench/{name}", "seconds": round(job.seconds, 1),
                       "matmul_bf16_tflops": speed["matmul_bf16_flops"] / 1e12,
                       "rows": {r["item"]: {"plain_s": r["plain"], "fast_s": r["fast"], "gflop": r["flops"] / 1e9}
                                for r in speed["rows"]}}
    log(f"speed table written to bench/{name} ({job.seconds:.0f} s); {speed['environment']['device']}, bf16 matmul "
        f"{flops_text(speed['matmul_bf16_flops'])}")
    return speed


def flops_text(rate: float) -> str:
    """A FLOP rate in TFLOP/s, or GFLOP/s below 1 TFLOP/s (a CPU)."""
    return f"{rate / 1e12:.1f} TFLOP/s" if rate >= 1e12 else f"{rate / 1e9:.2f} GFLOP/s"


def render_speed(speed: dict, record: dict, params: dict) -> str:
    """The speed table as markdown (bench/results-cuda-<gpu>.md in the bundle)."""
    env, rate = speed["environment"], speed["matmul_bf16_flops"]
    train, crop = params["train"], params["crop"]
    on_gpu = env["device"].startswith("cuda")
    unit, scale = ("TFLOP/s", 1e12) if on_gpu else ("GFLOP/s", 1e9)
    lines = [f"# gcn-bench training speed on a GPU lease: {env['device']}", "",
             f"- lease {record['id']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python "
             f"{env['python']}; {env['date']}",
             f"- profile {record['plan']}{' + the rehearsal overlay (toy size)' if record['toy'] else ''}: HR "
             f"{crop['hr_size']}, batch {train['batch_size']}, generator {train['generator']['blocks']} blocks, "
             f"discriminator {train['discriminator']['blocks']} blocks, d_update {train['d_update']}",
             f"- per strategy and path: median of {speed['iters']} timed iterations after {speed['warmup']} warm-up "
             f"ones ({'CUDA events' if on_gpu else 'host clock'}), synthetic crops, one process, "
             f"pipeline.training.train.Trainer.step_main (the `rec` auto-encoder's step as its own row); plain = "
             f"train.fast off (eager fp32, host batches, a loss read-back every step; cuDNN's default TF32 "
             f"convolutions on CUDA); fast = train.fast on (bf16 autocast, channels_last, fused Adam, batches on "
             f"the device, grouped read-back)",
             f"- GFLOP/it: bench/bench.py's counter (convolutions and matrix products, forward and backward). bf16 "
             f"matrix product {speed['matmul_size']}^3 on random data, measured in the same process: "
             f"{flops_text(rate)}; the last column is the fast path's FLOP rate as a share of it"
             + ("" if on_gpu else " (on a CPU without bf16 units, bf16 is emulated: the share says little)"),
             f"- VGG19 (cla, srgan): {speed['vgg']}", "",
             f"| strategy | GFLOP/it | plain ms/it | fast ms/it | fast/plain speed-up | fast {unit} | share of bf16 matmul |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in speed["rows"]:
        achieved = row["flops"] / row["fast"]
        lines.append(f"| {row['item']} | {row['flops'] / 1e9:.2f} | {row['plain'] * 1e3:.2f} | {row['fast'] * 1e3:.2f} | "
                     f"{row['plain'] / row['fast']:.2f} | {achieved / scale:.3g} | {achieved / rate:.1%} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- several processes at once

def _processes(work: Path, base: dict, plan: Plan, kind: str, procs: tuple[int, ...] | None, use_mps: bool, mps,
               speed: dict, clock: Clock, log: LeaseLog, record: dict, threads: int) -> dict:
    """Time the probe strategy with 1, 2, ... processes at once, without and with MPS (left running).

    Returns the options ({mode, procs, step_s, speedup, slowdown}), and the start-up overhead of a job.
    """
    counts = tuple(sorted(set(procs or (CUDA_PROCS if kind == "cuda" else CPU_PROCS))))
    results, notes = {"no MPS": _probe_set(work, base, plan, kind, counts, {}, "plain", clock, log, threads)}, []
    if use_mps and max(counts) > 1:
        reason = mps.start()
        if reason is None:
            more = tuple(c for c in counts if c > 1)
            results["MPS"] = _probe_set(work, base, plan, kind, more, mps.env, "mps", clock, log, threads)
        else:
            notes.append(f"MPS not used: {reason}")
            log(f"processes: MPS not used ({reason})")
    single = results["no MPS"].get(1)
    if single is None:   # no one-process round: the speed table's own time of that strategy
        single = next(r["fast"] for r in speed["rows"] if r["strategy"] == plan.probe_strategy and r["phase"] == "main")
    options = [{"mode": mode, "procs": n, "step_s": step, "speedup": n * single / step, "slowdown": step / single}
               for mode, steps in results.items() for n, step in steps.items()]
    if not options:   # the runs can still go one at a time, at the speed table's pace
        notes.append("no probe round finished: one process at a time, at the speed table's pace")
        log("processes: no probe round finished; the runs go one at a time")
        options = [{"mode": "no MPS", "procs": 1, "step_s": single, "speedup": 1.0, "slowdown": 1.0}]
    overhead = max(r.get("startup_s", 0.0) for r in _probe_startups(work)) + 5.0   # start-up, data, checkpoints
    record["processes"] = {"options": options, "notes": notes, "overhead_s": round(overhead, 1),
                           "probe_strategy": plan.probe_strategy}
    log("processes: " + ", ".join(f"{o['mode']} x{o['procs']} {o['speedup']:.2f}x" for o in options)
        + " the throughput of one")
    return {"options": options, "overhead_s": overhead}


def _probe_set(work: Path, base: dict, plan: Plan, kind: str, counts: tuple[int, ...], env: dict, tag: str,
               clock: Clock, log: LeaseLog, threads: int) -> dict:
    """Start max(counts) probe processes; round r lets the first counts[r] of them time steps at once.

    Returns {processes: mean seconds per step of the processes that ran in that round}.
    """
    from pipeline.lease.machine import Job

    n = max(counts)
    barrier = work / f"barrier-{tag}"
    shutil.rmtree(barrier, ignore_errors=True)
    barrier.mkdir(parents=True)
    seconds = PROBE_SECONDS[kind]
    spec = {**base, "strategy": plan.probe_strategy, "barrier": str(barrier), "rounds": list(counts),
            "seconds": seconds, "warmup": 3, "chunk": 10 if kind == "cuda" else 1, "table_steps": 4000,
            "timeout": 120.0, "threads": threads}
    jobs = [Job("probe", {**spec, "index": i}, work / "jobs", f"probe-{tag}-{i}", env, Path(base["repo"]))
            for i in range(n)]
    steps: dict[int, float] = {}
    try:
        ready = lambda: all((barrier / f"ready-{i}").exists() for i in range(n))
        if not _wait(ready, jobs, max(60.0, min(600.0, clock.left() / 3))):   # a loaded CPU starts slowly
            log(f"processes ({tag}): not all {n} probe processes became ready: {jobs[0].tail(2)}")
            return {}
        for r, count in enumerate(counts):
            atomic_write_text(barrier / f"go-{r}", str(count))
            done = lambda: all((barrier / f"done-{r}-{i}").exists() for i in range(count))
            if not _wait(done, jobs[:count], seconds + 60.0):
                log(f"processes ({tag}): round of {count} did not finish: {jobs[0].tail(2)}")
                break
        for job in jobs:
            job.wait(timeout=30.0)
        per_round: dict[int, list[float]] = {}
        for job in jobs:
            for row in (job.result() or {}).get("rounds", []):
                per_round.setdefault(row["procs"], []).append(row["step_s"])
        steps = {count: statistics.mean(v) for count, v in per_round.items() if len(v) == count}
    finally:
        for job in jobs:
            if job.poll() is None:
                job.wait(timeout=0.1)
    return steps


def _probe_startups(work: Path) -> list[dict]:
    rows = []
    for path in (work / "jobs").glob("probe-*.result.json"):
        rows.append(json.loads(path.read_text()))
    return rows or [{"startup_s": 10.0}]


def _wait(condition, jobs: list, timeout: float) -> bool:
    """Poll `condition` until true (True), a job exits early or `timeout` passes (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if any(job.poll() not in (None, 0) for job in jobs):
            return False
        time.sleep(0.05)
    return condition()


def _append_processes(out: Path, record: dict) -> None:
    path = out / record["speed"]["file"]
    chosen = record["processes"]["chosen"]
    lines = ["", f"## Several runs at once ({record['processes']['probe_strategy']}, fast path)", "",
             "Processes started together time their training steps at once behind a barrier; speed-up = processes "
             "x one process's seconds per step / each one's. Chosen: the setting under which the most planned runs "
             f"end by the deadline (ties: the higher speed-up, then fewer processes): **{chosen['mode']} "
             f"x{chosen['procs']}**.", "",
             "| setting | processes | ms per step, each | speed-up |", "|---|---:|---:|---:|"]
    for option in record["processes"]["options"]:
        lines.append(f"| {option['mode']} | {option['procs']} | {option['step_s'] * 1e3:.2f} | {option['speedup']:.2f} |")
    lines += [f"- {note}" for note in record["processes"]["notes"]]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")


# ---------------------------------------------------------------- training to the deadline

def _train(pending: list[Run], estimate: Estimate, train: dict, slots: int, clock: Clock, start, finished,
           bundle: Bundle, record: dict, log: LeaseLog) -> None:
    """Start runs while they fit the deadline and the bundle; pack each as it finishes; never stop one.

    After each finished run the estimate's correction becomes the median of measured / predicted.
    """
    seconds_of = lambda run: estimate.seconds(run.strategy, train)
    running: list[tuple] = []
    ratios: list[float] = []
    per_run_bytes = RUN_BYTES_GUESS
    while True:
        while len(running) < slots and pending:
            if bundle.room() < per_run_bytes * (len(running) + 1):
                log("no more runs: the bundle would have no room for them")
                for run in pending:
                    record["runs"][run.key]["status"] = "not started: no room in the bundle"
                pending.clear()
                break
            run = choose_next(pending, seconds_of, clock.now(), clock.deadline)
            if run is None:
                break
            predicted = seconds_of(run)
            pending.remove(run)
            raw = estimate.overhead_s + estimate.margin * estimate.slowdown * estimate.work(run.strategy, train)
            running.append((start(run), run, predicted, raw))
            record["runs"][run.key].update(status="started", start_s=round(clock.now(), 1),
                                           predicted_s=round(predicted, 1))
            log(f"start {run.key}: predicted {predicted:.0f} s, done by {clock.now() + predicted:.0f} s "
                f"(deadline {clock.deadline:.0f} s)")
        if not running:
            break
        time.sleep(0.2)
        for item in list(running):
            job, run, predicted, raw = item
            code = job.poll()
            if code is None:
                continue
            running.remove(item)
            entry = record["runs"][run.key]
            entry["wall_s"] = round(job.seconds, 1)
            if code == 0 and job.result() is not None:
                entry["status"] = "finished"
                ratios.append(job.seconds / raw)
                estimate.correction = min(3.0, max(0.7, statistics.median(ratios)))
                log(f"done {run.key}: {job.seconds:.0f} s (predicted {predicted:.0f} s); correction now "
                    f"{estimate.correction:.2f}")
                finished(run, job.result())
                sizes = [s for s in bundle.sizes if s]
                per_run_bytes = max(RUN_BYTES_GUESS // 2, sum(sizes) // max(1, len(bundle.runs)))
            else:
                entry["status"] = f"failed (exit {code})"
                entry["log_tail"] = job.tail(8)[-2000:]
                log(f"FAILED {run.key} (exit {code}): {job.tail(3)}")
    for run in pending:
        record["runs"][run.key]["status"] = "not started: predicted to end after the deadline"
    finished_runs = [k for k, v in record["runs"].items() if v["status"] == "finished"]
    log(f"training done: {len(finished_runs)} runs finished ({', '.join(finished_runs) or 'none'}), "
        f"{len(pending)} left for the next lease")


# ---------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.lease", description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--prepare", action="store_true", help="fill .lease/ with what the device needs")
    modes.add_argument("--preflight", action="store_true", help="what goes to the GPU machine and its size; exit 2 if anything is "
                                                                "missing or over the limits")
    modes.add_argument("--rehearse", action="store_true", help="the whole lease on this CPU at toy size, then the import")
    modes.add_argument("--import", dest="import_dir", type=Path, metavar="DIR", help="import a returned bundle")
    modes.add_argument("--restore", action="store_true", help="rebuild models/ of the plan's dataset from zoo/")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help=f"seconds from the start by which every started run must end (default "
                             f"{DEFAULT_DEADLINE_S:.0f}; rehearsal {REHEARSAL_DEADLINE_S:.0f})")
    parser.add_argument("--out", type=Path, default=None, help="the bundle folder (default: the OUT environment variable)")
    parser.add_argument("--plan", type=Path, default=PLAN, help=f"the plan file (default {PLAN})")
    parser.add_argument("--procs", default=None, help="numbers of processes tried at once, e.g. 1,4 (default "
                                                      "1,2,4,8 on a GPU, 1,2 on a CPU)")
    parser.add_argument("--no-mps", action="store_true", help="do not try NVIDIA MPS")
    parser.add_argument("--toy", action="store_true", help="the device part at the rehearsal's toy size (--rehearse "
                                                           "runs it)")
    parser.add_argument("--keep", action="store_true", help="--rehearse: keep its temporary folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from pipeline.lease import bundle, carry

    args = parse_args(argv)
    repo = Path(".")
    plan = load_plan(args.plan)
    procs = None
    if args.procs:
        try:
            procs = tuple(int(p) for p in args.procs.split(",") if p.strip())
        except ValueError:
            raise UserError(f"--procs: a comma-separated list of positive integers, got {args.procs!r}") from None
        if not procs or min(procs) < 1:
            raise UserError(f"--procs: a comma-separated list of positive integers, got {args.procs!r}")
    if args.deadline_s is not None and args.deadline_s <= 0:
        raise UserError(f"--deadline-s: must be a positive number of seconds, got {args.deadline_s}")
    if args.prepare:
        for line in carry.prepare(repo, plan, profile_params(repo, plan)):
            print(line)
        return 0
    if args.preflight:
        print(carry.describe(carry.preflight(repo, plan, profile_params(repo, plan))))
        return 0
    if args.import_dir is not None:
        if not args.import_dir.is_dir():
            raise UserError(f"{args.import_dir}: not a folder; give the bundle folder that came back from the GPU machine")
        bundle.import_bundle(args.import_dir, repo, repo, plan)
        return 0
    if args.restore:
        from pipeline.training.zoo import restore_from_zoo

        restored = restore_from_zoo(repo, plan.zoo_folder)
        print(f"restored {len(restored)} models of {plan.dataset} from {repo / 'zoo' / plan.zoo_folder}")
        return 0
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is None:
        raise UserError("--out: no bundle folder given (--out DIR, or the OUT environment variable)")
    if args.rehearse:
        from pipeline.lease.rehearsal import rehearse

        return rehearse(repo, out, plan, args.deadline_s or REHEARSAL_DEADLINE_S, args.keep)
    return run_device(repo, out, plan, args.deadline_s or DEFAULT_DEADLINE_S, args.toy, procs, not args.no_mps)

