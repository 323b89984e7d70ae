"""The package's layout guards itself: rooms by job, no import circle, no family of modules sharing a prefix.

`pipeline/` holds a few modules every room shares (config, cli, paths, fileio, errors, device) and one
subpackage per job (data, nets, training, evaluation, reporting, lease, campaign, app), each with an
__init__.py whose docstring says what the room is for and names its modules. Parsed with `ast`, never
imported, so the checks cost nothing and see late imports (inside functions) too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "pipeline"


def source_files(package: Path = PACKAGE) -> list[Path]:
    """The package's Python modules, data files in resources/ folders left out (they are copied, not imported)."""
    return sorted(p for p in package.rglob("*.py") if "resources" not in p.relative_to(package).parts
                  and "__pycache__" not in p.parts)


def module_name(path: Path, package: Path = PACKAGE) -> str:
    """`pipeline.data.crop` for pipeline/data/crop.py, `pipeline.data` for pipeline/data/__init__.py."""
    parts = (package.name, *path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports anywhere (module level or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                # `from a.b import c`: the module a.b.c when there is one, else the name c of module a.b
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found & modules


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = source_files(package)
    modules = {module_name(p, package) for p in files}
    return {module_name(p, package): imports(p, modules) - {module_name(p, package)} for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def shared_prefixes(folder: Path) -> dict[str, list[str]]:
    """Modules and subpackages of one folder whose names share a prefix (`lease_plan.py`, `lease_bundle.py`, ...)."""
    names = [p.stem for p in folder.glob("*.py") if not p.name.startswith("__")]
    names += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
    by_prefix: dict[str, list[str]] = {}
    for name in names:
        by_prefix.setdefault(name.split("_")[0], []).append(name)
    return {prefix: sorted(group) for prefix, group in by_prefix.items() if len(group) > 1}


def packages() -> list[Path]:
    return sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)


def test_no_import_circle():
    """No two modules import each other, directly or through others (late imports included)."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_is_caught(tmp_path):
    """The check itself: a late import that closes a circle (as pipeline.benchmark and pipeline.protocol once did)."""
    package = tmp_path / "pipeline"
    (package / "evaluation").mkdir(parents=True)
    (package / "__init__.py").write_text('"""p"""\n')
    (package / "evaluation" / "__init__.py").write_text('"""e"""\n')
    (package / "paths.py").write_text("KEYS = ()\n")
    (package / "evaluation" / "benchmark.py").write_text(
        "from pipeline import paths\n\ndef run():\n    from pipeline.evaluation import protocol\n")
    (package / "evaluation" / "protocol.py").write_text("from pipeline.evaluation.benchmark import run\n")
    graph = import_graph(package)
    assert graph["pipeline.evaluation.benchmark"] == {"pipeline.paths", "pipeline.evaluation.protocol"}
    assert find_cycle(graph) == ["pipeline.evaluation.benchmark", "pipeline.evaluation.protocol",
                                 "pipeline.evaluation.benchmark"]
    (package / "evaluation" / "protocol.py").write_text("from pipeline.paths import KEYS\n")
    assert find_cycle(import_graph(package)) is None


@pytest.mark.parametrize("folder", packages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_family_of_modules_shares_a_prefix(folder):
    """A family of modules (lease_*.py) is a room of its own: a subpackage."""
    assert not shared_prefixes(folder)


def test_a_shared_prefix_is_caught(tmp_path):
    for name in ("lease.py", "lease_plan.py", "lease_worker.py", "paths.py"):
        (tmp_path / name).write_text("")
    assert shared_prefixes(tmp_path) == {"lease": ["lease", "lease_plan", "lease_worker"]}


@pytest.mark.parametrize("folder", packages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_room_says_what_it_is_for(folder):
    """Each package's __init__.py has a docstring naming every module of the room (and imports nothing)."""
    tree = ast.parse((folder / "__init__.py").read_text())
    doc = ast.get_docstring(tree)
    assert doc, f"{folder}: no docstring in __init__.py"
    members = [p.stem for p in folder.glob("*.py") if not p.name.startswith("__")]
    members += [p.name for p in folder.iterdir() if (p / "__init__.py").is_file()]
    assert not [m for m in members if m not in doc.split()], f"{folder}/__init__.py: name every module"
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_stage_scripts_stay_thin():
    """A stage script parses its arguments and calls into the package: main() and nothing else."""
    for script in sorted((REPO / "stages").glob("*.py")):
        tree = ast.parse(script.read_text())
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert defined == ["main"], script.name
