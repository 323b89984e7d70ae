"""dvc.yaml and the Snakefile describe the same DAG: same stage CLIs, same outputs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from pipeline import strategies
from pipeline.config import load_params

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


def test_snakemake_trains_one_job_per_dataset_and_strategy():
    params = load_params(REPO / "params.yaml")
    dry = _snakemake_dry_run(REPO)
    trained = [s for s in strategies.select(params["strategy"]) if strategies.get(s).trains_generator]
    expected = {f"models/{ds}/{strategies.slug(s)}/config.json" for ds in params["datasets"] for s in trained}
    assert expected <= _snakemake_outputs(dry)
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
    assert len(trains) == 3 * n_strategies
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
