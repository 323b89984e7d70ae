"""The DAG guards itself: every dvc stage lists, as deps, exactly the code its stage script runs, and the Snakefile follows.

A stage's code is its script in stages/, every `pipeline` module the script imports, transitively
(parsed with `ast`, late imports inside functions included), and the resource files those modules
read through a constant of the package (RESOURCES). An edit to any of them must rerun the stage
(`dvc repro`, `snakemake`) and an edit to anything else must not, so the code deps of dvc.yaml
must equal that set: a missing dep leaves stale results, an extra one reruns for nothing.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"
CODE_PREFIXES = ("stages/", "pipeline/")
# The package's data files and the constant through which its modules read each one.
RESOURCES = {
    "PAPER_RESULTS": "pipeline/resources/gcn_paper_results.csv",
    "PUBLISHED_SR_RESULTS": "pipeline/resources/sr_benchmark_results.csv",
    "TEMPLATES": "pipeline/reporting/templates",
    # the lease's files: no dvc stage runs pipeline.lease, so they name no stage's deps
    "DEVICE_PACKAGES": "pipeline/lease/resources/device-packages.txt",
    "BLOCKER": "pipeline/lease/resources/sitecustomize.py",
}
# Snakefile rules that run another dvc stage's command (train_curves: train.py --curves-only).
RULE_STAGE = {"train_curves": "train"}
STAGE_CMD = re.compile(r"python (stages/\w+\.py)")


def module_file(name: str) -> Path:
    """The file of a `pipeline` module named relative to the package: `paths`, `data.crop`, ..."""
    return PACKAGE.joinpath(*name.split(".")).with_suffix(".py")


def imported_modules(path: Path) -> set[str]:
    """The `pipeline` modules a file imports anywhere in it (module level or inside functions), named relative to
    the package (`paths`, `data.crop`). A subpackage's __init__.py holds no code (test_package_inits_import_nothing),
    so importing through it adds no module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".", 1)[1] for alias in node.names if alias.name.startswith("pipeline.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            base = node.module.split(".", 1)[1] if "." in node.module else ""
            for alias in node.names:
                # `from pipeline[.room] import x`: x is a module when its file exists (else an attribute of `base`)
                name = f"{base}.{alias.name}" if base else alias.name
                if module_file(name).is_file():
                    found.add(name)
                elif base and module_file(base).is_file():
                    found.add(base)
    return found


def module_closure(script: Path) -> set[str]:
    """Every `pipeline` module a script runs: its imports, their imports, and so on."""
    seen: set[str] = set()
    todo = list(imported_modules(script))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imported_modules(module_file(name))
    return seen


def loaded_names(path: Path) -> set[str]:
    """Names a module reads (`NAME` or `module.NAME`): how it reaches a resource constant."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            names.add(node.attr)
    return names


def required_deps(script: str) -> set[str]:
    """The code deps a stage running `script` must list: the script, its module closure, their resources."""
    modules = module_closure(REPO / script)
    used = set().union(*(loaded_names(module_file(m)) for m in modules))
    return ({script} | {module_file(m).relative_to(REPO).as_posix() for m in modules}
            | {path for constant, path in RESOURCES.items() if constant in used})


def dvc_stages(path: Path = REPO / "dvc.yaml") -> dict[str, dict]:
    """dvc.yaml's stages by name, foreach bodies unwrapped."""
    return {name: stage.get("do", stage) for name, stage in yaml.safe_load(path.read_text())["stages"].items()}


def code_deps(stage: dict) -> set[str]:
    return {d for d in stage["deps"] if d.startswith(CODE_PREFIXES)}


def dep_problems(stage: dict) -> tuple[set[str], set[str]]:
    """(missing, extra) code deps of one dvc stage body."""
    script = STAGE_CMD.search(stage["cmd"]).group(1)
    required, listed = required_deps(script), code_deps(stage)
    return required - listed, listed - required


@pytest.mark.parametrize("name", list(dvc_stages()))
def test_dvc_stage_lists_exactly_the_code_it_runs(name):
    missing, extra = dep_problems(dvc_stages()[name])
    assert not missing, f"dvc.yaml stage {name}: add deps {sorted(missing)} (its script imports them)"
    assert not extra, f"dvc.yaml stage {name}: remove deps {sorted(extra)} (its script never runs them)"


def test_a_missing_or_extra_dep_is_caught():
    """The check itself: a dep taken out of a stage, or one it never runs, is reported."""
    stage = dict(dvc_stages()["crop"])
    stage["deps"] = [d for d in stage["deps"] if d != "pipeline/paths.py"] + ["pipeline/training/train.py"]
    assert dep_problems(stage) == ({"pipeline/paths.py"}, {"pipeline/training/train.py"})
    # a late import inside a function counts: evaluate loads pipeline.nets.networks only when it runs
    assert "nets.networks" in module_closure(REPO / "stages/evaluate.py")


def test_evaluation_does_not_depend_on_the_trainer():
    """choose_device lives in pipeline.device, so an edit to the trainer reruns training alone."""
    for script in ("stages/evaluate.py", "stages/benchmark.py", "stages/report.py"):
        assert "training.train" not in module_closure(REPO / script), script


def test_resource_constants_name_every_resource():
    """Every file of the package's resources folders and the templates folder is reached through a RESOURCES
    constant."""
    resources = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("resources/*") if p.is_file()
                 and "__pycache__" not in p.parts}
    assert resources | {"pipeline/reporting/templates"} == set(RESOURCES.values())
    modules = [p for p in PACKAGE.rglob("*.py") if "resources" not in p.relative_to(PACKAGE).parts]
    defined = set().union(*(
        {t.id for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Assign)
         for t in node.targets if isinstance(t, ast.Name)} for p in modules))
    assert set(RESOURCES) <= defined


def test_package_inits_import_nothing():
    """pipeline/__init__.py and every subpackage's __init__.py run with every import but hold no code, so no stage
    lists them."""
    inits = sorted(PACKAGE.rglob("__init__.py"))
    assert len(inits) > 1
    for init in inits:
        tree = ast.parse(init.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], init


def _snakemake_jobs(params_file: Path) -> list[tuple[str, set[str]]]:
    """(rule, inputs) of every job `snakemake -n --forceall` plans."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "-c1", "--config",
                          f"params={params_file}"], cwd=REPO, capture_output=True, text=True, check=True)
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", run.stdout + run.stderr):
        head = re.match(r"(?:local)?rule (\w+):", block)
        inputs = re.search(r"^\s+input: (.*)$", block, re.M)
        if head:
            jobs.append((head.group(1), set(inputs.group(1).split(", ")) if inputs else set()))
    return jobs


def test_snakefile_rules_take_the_dvc_stage_code_as_inputs(tmp_path):
    """Each Snakemake job's code inputs equal its dvc stage's code deps (the Snakefile reads dvc.yaml)."""
    from pipeline.config import apply_overlay

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("eval: {benchmarks: [set5]}\n")    # so a test-only set is downloaded and scored
    apply_overlay(params, overlay)
    stages = dvc_stages()
    jobs = _snakemake_jobs(params)
    ran = {rule for rule, _ in jobs}
    assert {"download", "crop", "weights", "train", "train_curves", "evaluate", "sr_benchmark", "report"} <= ran
    for rule, inputs in jobs:
        if rule == "all":
            continue
        stage = stages[RULE_STAGE.get(rule, rule)]
        assert {i for i in inputs if i.startswith(CODE_PREFIXES)} == code_deps(stage), rule
    # the test-only sets are downloaded by the download rule: dvc's download_benchmark has the same code
    assert code_deps(stages["download_benchmark"]) == code_deps(stages["download"])
    assert set(stages) <= {RULE_STAGE.get(rule, rule) for rule in ran} | {"download_benchmark"}
