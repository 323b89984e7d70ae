"""dvc.yaml and the Snakefile describe the same DAG: same stage CLIs, same outputs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from pipeline.config import load_params, seed_list
from pipeline.nets import strategies

REPO = Path(__file__).resolve().parents[1]
STAGE_CMD = re.compile(r"python stages/(\w+)\.py --params (\S+)((?: --\w+ \S+)*)")


def _stage_calls(text: str) -> set[tuple[str, str]]:
    """(stage script, dataset or '') for every stage CLI call in a text."""
    calls = set()
    for match in STAGE_CMD.finditer(text):
        opts = dict(re.findall(r"--(\w+) (\S+)", match.group(3)))
        calls.add((match.group(1), opts.get("dataset", "")))
    return calls


def _snakemake_dry_run(cwd: Path, params: str = "params.yaml") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "-c1", "--config", f"params={params}"],
        cwd=cwd, capture_output=True, text=True, check=True,
    )
    return out.stdout + out.stderr


def _snakemake_outputs(text: str) -> set[str]:
    outputs = set()
    for line in text.splitlines():
        if line.strip().startswith("output:"):
            outputs.update(p.strip() for p in line.split(":", 1)[1].split(","))
    return outputs


def test_dvc_and_snakemake_run_the_same_stage_clis_and_outputs(tmp_path):
    dry = _snakemake_dry_run(REPO)
    repo = Repo(str(REPO))
    dvc_cmds = "\n".join(stage.cmd for stage in repo.index.stages)
    dvc_outs = {str(Path(out.fs_path).relative_to(REPO)) for stage in repo.index.stages for out in stage.outs}

    assert _stage_calls(dvc_cmds) == _stage_calls(dry)
    snake_outs = _snakemake_outputs(dry)
    # every dvc output is produced by Snakemake (itself or files inside it), and vice versa
    for out in dvc_outs:
        assert any(s == out or s.startswith(out + "/") for s in snake_outs), out
    for s in snake_outs:
        assert any(s == out or s.startswith(out + "/") for out in dvc_outs), s


def test_snakemake_trains_one_job_per_dataset_strategy_and_seed(tmp_path):
    params_file = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params_file)
    subprocess.run([sys.executable, "stages/configure.py", "--params", str(params_file), "configs/smoke.yaml"],
                   cwd=REPO, check=True, capture_output=True)
    text = params_file.read_text()
    params_file.write_text(re.sub(r"(?m)^  seeds: \d+", "  seeds: [0, 5]", text))
    params = load_params(params_file)
    assert params["train"]["seeds"] == [0, 5]
    dry = _snakemake_dry_run(REPO, str(params_file))
    trained = [s for s in strategies.select(params["strategy"]) if strategies.get(s).trains_generator]
    expected = {f"models/{ds}/{strategies.slug(s)}/seed-{seed}/config.json"
                for ds in params["datasets"] for s in trained for seed in (0, 5)}
    assert expected <= _snakemake_outputs(dry)
    assert dry.count("rule train:") == len(expected)
    train_jobs = dry.split("rule train:")[1:]
    assert train_jobs and all("gpu=1" in job.split("Shell command")[0] for job in train_jobs)


def test_paper_configuration_lists_every_job(tmp_path):
    paper_params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", paper_params)
    subprocess.run([sys.executable, "stages/configure.py", "--params", str(paper_params), "configs/paper.yaml"],
                   cwd=REPO, check=True, capture_output=True)
    params = load_params(paper_params)
    assert params["datasets"] == ["imagenet", "dtd", "sat"]
    assert params["crop"]["hr_size"] == 256 and params["train"]["iterations"] == 5000
    dry = _snakemake_dry_run(REPO, str(paper_params))
    calls = _stage_calls(dry)
    n_strategies = sum(strategies.get(s).trains_generator for s in strategies.select(params["strategy"]))
    trains = [line for line in dry.splitlines() if line.startswith("Shell command: python stages/train.py")]
    curves = [line for line in trains if "--curves-only" in line]   # one per dataset: overlays + train metrics
    n_seeds = len(seed_list(params["train"]))
    assert n_seeds == 3                                  # the paper profile trains every strategy 3 times
    assert len(trains) - len(curves) == 3 * n_strategies * n_seeds and len(curves) == 3
    for ds in ("imagenet", "dtd", "sat"):
        for stage in ("download", "crop", "train", "evaluate"):
            assert (stage, ds) in calls
    assert ("weights", "") in calls and ("report", "") in calls


def test_overlay_with_a_bad_value_is_refused_and_leaves_params_untouched(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    before = params.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("crop: {hr_size: 30, scale: 4}\n")
    run = subprocess.run([sys.executable, "stages/configure.py", "--params", str(params), str(bad)],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert "crop.scale" in run.stderr and "Traceback" not in run.stderr
    assert params.read_text() == before


def test_snakefile_params_mirror_dvc_yaml():
    """Each rule's params are the sections its dvc stage declares (train: its own strategy), and its
    code files are inputs, so Snakemake reruns what dvc reruns."""
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    text = (REPO / "Snakefile").read_text()
    for rule in ("download", "crop", "weights", "train", "evaluate", "sr_benchmark", "report"):
        body = text.split(f"rule {rule}:")[1].split("\nrule ")[0]
        assert f'dvc_params("{rule}"' in body and f'dvc_code("{rule}")' in body and "log:" in body, rule
    assert dvc["train"]["do"]["params"] == ["strategy", "train", "crop.scale", "eval.weights_order"]   # the Snakefile skips `strategy`


# --- end to end: a small pipeline run, then what an edit of params.yaml plans -------------------

def _env() -> dict:
    import os
    # registry downloads (weights, pypi datasets) are shared with the checkout's cache, as in test_e2e
    return dict(os.environ, PYTHONPATH=str(REPO), DVC_NO_ANALYTICS="1", OMP_NUM_THREADS="1",
                GCN_BENCH_CACHE=os.environ.get("GCN_BENCH_CACHE", str(REPO / "data" / "cache")))


def _snakemake(cwd: Path, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "snakemake", "-c2", *args], cwd=cwd, env=_env(),
                         capture_output=True, text=True)
    assert run.returncode == 0, f"snakemake {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout + run.stderr


def _planned(cwd: Path, *args: str) -> dict[str, int]:
    """{rule: number of jobs} that `snakemake -n` plans (empty when there is nothing to do)."""
    out = _snakemake(cwd, "-n", *args)
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
            if m.group(1) not in ("total", "all")}


def _overlay(cwd: Path, text: str) -> None:
    (cwd / "overlay.yaml").write_text(text)
    subprocess.run([sys.executable, "stages/configure.py", "overlay.yaml"], cwd=cwd, env=_env(),
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A copy of the repository's files (committed reports and metrics included) on the smoke config."""
    work = tmp_path_factory.mktemp("workflow") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    subprocess.run([sys.executable, "stages/configure.py", "configs/smoke.yaml"], cwd=work, env=_env(),
                   check=True, capture_output=True)
    assert (work / "reports" / "index.html").is_file() and (work / "metrics").is_dir()
    return work


@pytest.mark.slow
def test_snakemake_reruns_exactly_the_jobs_an_edit_affects(smoke_run):
    work = smoke_run
    params = load_params(work / "params.yaml")
    n_train = sum(strategies.get(s).trains_generator for s in strategies.select(params["strategy"]))
    n_train *= len(seed_list(params["train"]))        # one job per strategy and seed
    trained = {"train": n_train, "train_curves": 1}   # + the dataset's overlaid curves and validation metrics
    # a fresh copy runs everything, although reports/index.html and metrics/*.json are committed
    assert _planned(work) == {"download": 1, "crop": 1, "weights": 1, **trained, "evaluate": 1, "sr_benchmark": 1,
                              "report": 1}
    _snakemake(work)
    assert (work / "logs" / "train" / "sample-texture" / "mse" / "seed-0.log").is_file()
    assert "Traceback" not in (work / "logs" / "report.log").read_text()
    assert _planned(work) == {}

    original = (work / "params.yaml").read_text()
    _overlay(work, "train: {iterations: 3}\n")
    assert _planned(work) == {**trained, "evaluate": 1, "sr_benchmark": 1, "report": 1}   # new models are rescored
    (work / "params.yaml").write_text(original)   # back as it was: nothing to do, params.yaml's mtime is no trigger
    assert _planned(work) == {}

    _overlay(work, "report: {figures_per_dataset: 2}\n")
    assert _planned(work) == {"report": 1}
    (work / "params.yaml").write_text(original)

    _overlay(work, "eval: {batch_size: 4}\n")
    assert _planned(work) == {"evaluate": 1, "report": 1}    # an eval setting never retrains
    (work / "params.yaml").write_text(original)

    # the same values in another file: nothing to do (the file name is not a tracked param)
    shutil.copy(work / "params.yaml", work / "same.yaml")
    assert _planned(work, "--config", "params=same.yaml") == {}
    # an edited code file (Snakemake compares checksums, so a mere touch is not a change): the
    # stages that run it and what follows
    with open(work / "pipeline" / "reporting" / "report.py", "a") as handle:
        handle.write("# edited\n")
    assert _planned(work) == {"report": 1}
