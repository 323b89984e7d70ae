"""The GPU machine's side of a lease: set-up of the bare machine, NVIDIA MPS, and the job processes.

- `install_wheels`: the shipped wheels into .lease/site (pip with no index, no dependencies), put on
  sys.path and on PYTHONPATH for the job processes;
- `check_monitoring`: DVCLive imports and writes a log as pipeline.training.monitor uses it, lpips imports;
  a failure stops the lease before any training (the rehearsal proves these imports on a CPU);
- `prepare_root`: the shipped images where the download stage would have put them, the shipped VGG19
  archive where pipeline.nets.weights looks for it, AlexNet recorded unavailable (the validation pass then
  skips LPIPS at once instead of trying downloads: there is no network there);
- `MPS`: the NVIDIA Multi-Process Service daemon (`nvidia-cuda-mps-control -d`) in folders of its own,
  started and stopped by the lease; it changes no GPU setting;
- `Job`: one pipeline.lease.worker process with its spec, log and result files.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import paths
from pipeline.errors import UserError
from pipeline.fileio import atomic_write_json, read_json
from pipeline.lease import carry
from pipeline.nets import weights

MONITORING_PACKAGES = ("dvclive", "dvc", "lpips", "ruamel.yaml")


class LeaseError(UserError):
    """The lease cannot go on (set-up failed); nothing was trained."""


def install_wheels(repo: Path, site: Path) -> list[str]:
    """pip install the shipped wheels into `site` (offline, no dependencies) and make them importable."""
    wheels = sorted(carry.wheels_dir(repo).glob("*.whl"))
    if not wheels:
        raise LeaseError(f"{carry.wheels_dir(repo)}: no wheels; copy .lease/ to the GPU machine beside the working tree")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site), *map(str, wheels)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LeaseError(f"pip install of the shipped wheels failed: {tail[0]}")
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    importlib.invalidate_caches()
    return [w.name for w in wheels]


def check_monitoring(work: Path) -> dict[str, str]:
    """DVCLive writes a log (in `work`) as pipeline.training.monitor uses it, and lpips imports; their versions. LeaseError if not."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        import lpips  # noqa: F401  (pipeline.evaluation.perceptual, for the validation pass)
        from dvclive import Live

        with tempfile.TemporaryDirectory(dir=work) as tmp, contextlib.redirect_stdout(io.StringIO()):
            live = Live(dir=str(Path(tmp) / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=False, report=None)
            live.step = 1
            live.log_metric("train/loss", 1.0)
            live.make_summary()
            live.end()
            if not (Path(tmp) / "dvclive" / "metrics.json").is_file():
                raise RuntimeError("DVCLive wrote no metrics.json")
    except Exception as err:  # any failure here would stop every training process later
        raise LeaseError(f"monitoring does not work on this machine ({type(err).__name__}: {err}); nothing was "
                         f"trained") from None
    return {name: importlib.metadata.version(name) for name in MONITORING_PACKAGES}


def prepare_root(repo: Path, dataset: str) -> dict | None:
    """Put the shipped data and VGG19 archive where the pipeline looks; the VGG19 record if it was shipped."""
    repo = Path(repo)
    raw = repo / paths.raw_dir(dataset)
    if not (raw / "SOURCE.json").is_file():
        shipped = carry.data_dir(repo, dataset)
        problem = carry.check_data(shipped)
        if problem:
            raise LeaseError(f"{problem}; copy .lease/ to the GPU machine beside the working tree")
        if raw.is_symlink() or raw.exists():
            shutil.rmtree(raw) if raw.is_dir() and not raw.is_symlink() else raw.unlink()
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.symlink_to(shipped.resolve(), target_is_directory=True)
    archives = sorted(carry.weights_dir(repo).glob("*")) if carry.weights_dir(repo).is_dir() else []
    for archive in archives:
        target = weights.archives_dir(repo) / archive.name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(archive, target)
    if "alexnet" not in weights.read_manifest(repo):
        weights.record_unavailable("alexnet", "not shipped to the GPU machine (no network there): validation without "
                                              "LPIPS", repo)
    if not archives:
        return None
    _, record = weights.resolve("vgg19", ("cache", "registry"), repo)   # converted once, offline
    return record


def environment_text(torch_versions: dict, packages: dict, lease_id: str) -> str:
    """nvidia-smi's report (when there is one) and the versions, as environment.txt."""
    lines = [f"lease {lease_id}", f"python {sys.version.split()[0]} ({sys.executable})"]
    lines += [f"{k} {v}" for k, v in {**torch_versions, **packages}.items()]
    lines += [f"cpus {os.cpu_count()}", ""]
    smi = shutil.which("nvidia-smi")
    if smi:
        for args in ([], ["--query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,power.limit",
                          "--format=csv"]):
            try:
                lines.append(subprocess.run([smi, *args], capture_output=True, text=True, timeout=30).stdout)
            except (OSError, subprocess.SubprocessError) as err:
                lines.append(f"nvidia-smi failed: {err}")
    else:
        lines.append("nvidia-smi: not found (no NVIDIA GPU here)")
    return "\n".join(lines) + "\n"


class MPS:
    """The NVIDIA MPS control daemon, in folders of its own under `folder`; `env` reaches its clients."""

    def __init__(self, folder: Path) -> None:
        self.exe = shutil.which("nvidia-cuda-mps-control")
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
        self.running = False

    def start(self) -> str | None:
        """Start the daemon; None when it runs, else why not."""
        if self.exe is None:
            return "nvidia-cuda-mps-control not found"
        for folder in self.env.values():
            Path(folder).mkdir(parents=True, exist_ok=True)
        try:
            result = subprocess.run([self.exe, "-d"], env={**os.environ, **self.env}, capture_output=True, text=True,
                                    timeout=30)
        except (OSError, subprocess.SubprocessError) as err:
            return f"nvidia-cuda-mps-control -d failed: {err}"
        if result.returncode != 0:
            return f"nvidia-cuda-mps-control -d exited {result.returncode}: {(result.stderr or result.stdout).strip()[:200]}"
        self.running = True
        return None

    def stop(self) -> None:
        if not self.running:
            return
        try:
            subprocess.run([self.exe], input="quit\n", env={**os.environ, **self.env}, capture_output=True, text=True,
                           timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(1.0)        # the server leaves after its clients; new processes then run without it
        self.running = False


class Job:
    """One `python -m pipeline.lease.worker KIND SPEC` process: spec, log and result files under `folder`."""

    def __init__(self, kind: str, spec: dict, folder: Path, label: str, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.kind, self.label, self.started = kind, label, time.monotonic()
        self.spec_path, self.log_path = folder / f"{label}.json", folder / f"{label}.log"
        self.result_path = folder / f"{label}.result.json"
        self.result_path.unlink(missing_ok=True)
        atomic_write_json(self.spec_path, {**spec, "result": str(self.result_path)})
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "pipeline.lease.worker", kind, str(self.spec_path)],
                                        stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
                                        env={**os.environ, **(env or {})})

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and not self.log.closed:
            self.log.close()
        return code

    def wait(self, timeout: float | None = None) -> int:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.poll()

    def result(self) -> dict | None:
        data = read_json(self.result_path)
        return data if isinstance(data, dict) else None

    def tail(self, lines: int = 5) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
        return " | ".join(l.strip() for l in text.strip().splitlines()[-lines:])

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

