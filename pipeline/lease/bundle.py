"""What a lease brings back from the GPU machine (the bundle) and how it is imported into the project and its
model zoo.

The bundle is the lease's output folder (`--out`), kept within the bundle's size limits (`check_limits`), so it
can come back through a narrow transfer channel: at most 8 files of at most 16 MiB, 64 MiB together, plain
names, at most 2 folders deep. It holds

- ``runs-NN.tar.gz``: the finished runs, ``<dataset>/<slug>/seed-<k>/`` with config.json, log.csv,
  validation.csv, pretrain_log.csv, the DVCLive folder and ``generator.pt`` with float16 weights
  (about 3.2 MB for the paper's 10-block generator; `half_generator`), packed into as few parts as the
  limits allow and rewritten after every finished run, so a lease cut short still returns its runs;
- ``lease.json`` (what ran, predictions against measurements, the crops' manifest sha256, the test
  crop count), ``lease.log``, ``environment.txt`` (nvidia-smi, versions) and
  ``bench/results-<device>.md`` (the speed table).

`import_bundle` (python -m pipeline.lease --import DIR) writes each run into
models/<dataset>/<slug>/seed-<k>/ as the trainer would have
(generator.pt back in float32, loadable by pipeline.nets.networks.load_sr_model) after checking that its
inputs hash is the one this project computes for the profile here, and copies it into the committed
model zoo, zoo/<plan zoo folder>/<slug>/seed-<k>/ (float16 generator, config.json, log.csv.gz,
validation.csv), from which `restore_from_zoo` rebuilds models/ in a fresh clone.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
import tempfile
from pathlib import Path


from pipeline import paths
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json, sha256_file
from pipeline.lease.plan import Plan, Run, needs_vgg19, profile_params, run_digest
from pipeline.nets import strategies as registry
from pipeline.training.zoo import RUN_FILES, half_generator, write_model, write_zoo, write_zoo_index

MIB = 2 ** 20
MAX_FILES = 8
MAX_FILE_BYTES = 16 * MIB
MAX_TOTAL_BYTES = 64 * MIB
MAX_DEPTH = 2                        # <bundle>/a/b/file is within the limits, <bundle>/a/b/c/file is not
PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
FIXED_FILES = ("lease.json", "lease.log", "environment.txt", "bench")   # the speed table is bench/<one file>
PART = "runs-{:02d}.tar.gz"
RESERVE_BYTES = 2 * MIB              # kept free for lease.json, lease.log, environment.txt and the speed table


# ---------------------------------------------------------------- limits

def check_limits(out: Path) -> list[str]:
    """Every way the folder breaks the bundle's size limits (empty: none)."""
    out, problems = Path(out), []
    files = [p for p in sorted(out.rglob("*")) if p.is_file() or p.is_symlink()]
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not all(PLAIN_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: not a plain name (letters, digits, '.', '_', '-')")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{rel}: not a plain file or folder")
        if path.is_file() and len(rel.parts) - 1 > MAX_DEPTH:
            problems.append(f"{rel}: more than {MAX_DEPTH} folders deep")
        if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel}: {path.stat().st_size / MIB:.1f} MiB, over {MAX_FILE_BYTES // MIB} MiB")
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, over {MAX_FILES}")
    total = sum(p.stat().st_size for p in files if p.is_file())
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total / MIB:.1f} MiB in all, over {MAX_TOTAL_BYTES // MIB} MiB")
    return problems


# ---------------------------------------------------------------- packing runs

def run_members(run_dir: Path, arcdir: str) -> dict[str, bytes]:
    """The bundle's files of one finished run, by archive name under `arcdir` (<dataset>/<slug>/seed-<k>)."""
    run_dir, members = Path(run_dir), {}
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            members[f"{arcdir}/{name}"] = (run_dir / name).read_bytes()
    weights, precision = half_generator(run_dir / "generator.pt")
    members[f"{arcdir}/generator.pt"] = weights
    config = json.loads(members[f"{arcdir}/config.json"])
    config["weights_precision"] = precision
    members[f"{arcdir}/config.json"] = json.dumps(config, indent=2).encode()
    live = paths.live_dir(run_dir)
    for path in sorted(live.rglob("*")) if live.is_dir() else []:
        if path.is_file():
            members[f"{arcdir}/{path.relative_to(run_dir).as_posix()}"] = path.read_bytes()
    return members


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Bundle:
    """The runs' parts of a lease's bundle: each finished run goes into the first part it fits in.

    Parts are rewritten whole (atomically) when a run is added, so the folder is complete after each.
    At most MAX_FILES minus the fixed files' count parts, each at most MAX_FILE_BYTES, and all of them
    at most MAX_TOTAL_BYTES minus RESERVE_BYTES.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.parts: list[dict[str, bytes]] = []
        self.sizes: list[int] = []
        self.runs: list[str] = []
        self.max_parts = MAX_FILES - len(FIXED_FILES)

    def room(self) -> int:
        """Bytes the parts may still grow by."""
        return MAX_TOTAL_BYTES - RESERVE_BYTES - sum(self.sizes)

    def add(self, run_dir: Path, arcdir: str) -> bool:
        """Pack one run; False (nothing written) when it fits in no part."""
        members = run_members(run_dir, arcdir)
        candidates = list(range(len(self.parts))) + ([len(self.parts)] if len(self.parts) < self.max_parts else [])
        for index in candidates:
            merged = {**(self.parts[index] if index < len(self.parts) else {}), **members}
            data = _tar_gz(merged)
            old = self.sizes[index] if index < len(self.sizes) else 0
            if len(data) > MAX_FILE_BYTES or len(data) - old > self.room():
                continue
            atomic_write_bytes(self.out / PART.format(index + 1), data)
            if index < len(self.parts):
                self.parts[index], self.sizes[index] = merged, len(data)
            else:
                self.parts.append(merged)
                self.sizes.append(len(data))
            self.runs.append(arcdir)
            return True
        return False


# ---------------------------------------------------------------- import

def _safe_extract(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            target = (dest / member.name).resolve()
            if not member.isfile() or dest.resolve() not in target.parents:
                raise UserError(f"{archive}: refusing member {member.name!r} (not a plain file inside the bundle)")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())


def read_bundle(bundle: Path, work: Path) -> tuple[dict, list[Path]]:
    """The bundle's lease.json and its runs' folders, unpacked under `work`."""
    bundle = Path(bundle)
    lease = read_json(bundle / "lease.json")
    if not isinstance(lease, dict):
        raise UserError(f"{bundle / 'lease.json'}: missing or unreadable; is {bundle} the folder a lease wrote (--out)?")
    for archive in sorted(bundle.glob("runs-*.tar.gz")):
        _safe_extract(archive, work)
    runs = sorted(p.parent for p in work.glob("*/*/seed-*/config.json"))
    return lease, runs


def update_selection(overlay: Path, strategy: list[str], seeds: list[int]) -> None:
    """Set `strategy` and `train.seeds` of the profile overlay, keeping its comments (ruamel.yaml, CPU side)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    data = rt.load(Path(overlay).read_text())
    for parent, key, value in ((data, "strategy", strategy), (data["train"], "seeds", seeds)):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        parent[key] = seq
    buffer = io.StringIO()
    rt.dump(data, buffer)
    atomic_write_text(Path(overlay), buffer.getvalue())


def run_of(run_dir: Path) -> tuple[str, Run]:
    """(dataset, Run) of an unpacked run folder <dataset>/<slug>/seed-<k>."""
    config = json.loads((run_dir / "config.json").read_text())
    return config["dataset"], Run(registry.canonical(config["strategy"]), int(config["seed"]))


def save_lease_record(out: Path, record: dict) -> None:
    atomic_write_json(Path(out) / "lease.json", record)


# ---------------------------------------------------------------- import

def import_bundle(bundle: Path, repo: Path, root: Path, plan: Plan, rehearse: bool = False) -> list[Path]:
    """A returned bundle into <root>/models and <root>/zoo, after checking every run's inputs hash here."""
    from pipeline.lease.plan import evaluable_selection, is_imported, zoo_dir

    params = profile_params(repo, plan, rehearse)
    with tempfile.TemporaryDirectory(prefix=".lease-import-", dir=root) as tmp:   # beside models/: same disk
        lease, run_dirs = read_bundle(bundle, Path(tmp))
        if bool(lease.get("toy")) != rehearse:
            raise UserError(f"{bundle}: a {'rehearsal' if lease.get('toy') else 'GPU lease'} bundle; import it "
                            f"{'with' if lease.get('toy') else 'without'} the rehearsal's toy profile")
        if not run_dirs:
            print(f"{bundle}: no finished runs in this bundle (lease {lease['id']}: {lease.get('error', 'no error')})")
            return []
        manifest_sha = ensure_crops(params, plan.dataset, root)
        wanted = lease.get("data", {}).get("manifest_sha256")
        if manifest_sha != wanted:
            raise UserError(f"{paths.manifest_path(plan.dataset)}: sha256 {manifest_sha[:12]} here, {str(wanted)[:12]} "
                            f"on the lease: the crops differ (other data or crop parameters); nothing imported")
        vgg_sha = None
        checked = []
        for run_dir in run_dirs:
            dataset, run = run_of(run_dir)
            if dataset != plan.dataset:
                raise UserError(f"{run_dir.name}: dataset {dataset}, not the plan's {plan.dataset}; nothing imported")
            if needs_vgg19(run.strategy) and vgg_sha is None:
                vgg_sha = local_vgg19(root)["sha256"]
            digest = run_digest(params, run, manifest_sha, vgg_sha)
            config = json.loads((run_dir / "config.json").read_text())
            if config.get("inputs_hash") != digest or not config.get("completed"):
                raise UserError(f"{run.key}: inputs hash {str(config.get('inputs_hash'))[:12]} from the lease, "
                                f"{digest[:12]} here for {plan.profile}: trained with other parameters or code; "
                                f"nothing imported")
            checked.append((run_dir, run))
        imported = []
        for run_dir, run in checked:
            dest = Path(root) / paths.model_dir(plan.dataset, run.slug, run.seed)
            write_model(run_dir, dest, {"imported_from": str(bundle)})
            kept = zoo_dir(root, plan.zoo_folder, run)
            write_zoo(run_dir, kept)
            imported.append(dest)
            print(f"imported {run.key} (lease {lease['id']}) -> {dest} and {kept}")
    write_zoo_index(root)
    if not rehearse:
        digests = {}
        for run in plan.runs:
            needs = needs_vgg19(run.strategy)
            digests[run] = run_digest(params, run, manifest_sha, (vgg_sha or local_vgg19(root)["sha256"]) if needs else None)
        done = {run for run in plan.runs if is_imported(root, plan, run, digests[run])}
        strategy, seeds = evaluable_selection(done, plan.runs)
        update_selection(repo / plan.profile, strategy, seeds)
        print(f"{plan.profile}: strategy {strategy}, train.seeds {seeds} (every run imported so far that "
              f"`dvc repro` can evaluate without training)")
    return imported


def ensure_crops(params: dict, dataset: str, root: Path) -> str:
    """The dataset's crops at these parameters (download and crop stages' code when missing); the manifest sha256."""
    from pipeline.data import crop, sources
    from pipeline.fileio import read_json

    root = Path(root)
    info = read_json(root / paths.crops_dir(dataset) / "info.json") or {}
    spec = {k: params["crop"][k] for k in ("hr_size", "scale", "downscale", "lr_from", "seed")}
    policy = params["data"][dataset].get("crop", {})
    same = all(info.get(k) == v for k, v in spec.items()) and info.get("requested") == {
        "train": policy.get("n_train"), "test": policy.get("n_test")} and info.get("prep") == policy.get("prep", "crop")
    if not same:
        if not (root / paths.raw_dir(dataset) / "SOURCE.json").is_file():
            sources.fetch_dataset(params, dataset, root)
        crop.crop_dataset(params, dataset, root)
    return sha256_file(root / paths.manifest_path(dataset))


def local_vgg19(root: Path) -> dict:
    """The VGG19 record the train stage will use here (registry's 8-bit copy, as on the lease)."""
    from pipeline.nets import weights

    return weights.resolve("vgg19", ("cache", "registry"), root)[1]
