"""The fast training path (params `train.fast`: auto | on | off; auto = on).

The networks are small and the mini-batch is 10, so an eager fp32 loop that copies each batch
from the host and reads every loss back at once leaves most of a GPU idle. The fast path
changes how a step runs, never what it computes (bench/README.md states the tolerances):

- `Batches`: the training crops are put on the device once as uint8 tensors; each step's batch
  is gathered and converted to [-1,1] there. The batch indices of every step are the same
  function of (seed, step) as the plain path's (pipeline.training.train.batch_indices), computed up front
  and uploaded once, so no image data crosses the host-device link during training;
- channels_last memory format for the conv nets (`memory_format`);
- bf16 autocast (`autocast`) on CUDA, and on a CPU that computes bf16 natively (AVX512-BF16 or AMX-BF16,
  `native_bf16_cpu`; measured: 1.9x faster adv,rec iterations on an AVX512-BF16 EPYC). A CPU
  without it emulates bf16 (measured 12x slower than fp32 on an AVX2-only EPYC, bench/results-cpu.md),
  so the fast path keeps fp32 there. The losses
  (MSE, BCE-with-logits) are computed in fp32 either way; `precision` names the choice;
- cuDNN autotuning (`configure_backends`) and fused Adam on CUDA (`adam`);
- loss values are read back in groups rather than after every step (pipeline.training.train), so the
  host can queue the next steps while the GPU works.

torch.compile is not switched on by the train stage (it has not been measured on a GPU here);
bench/bench.py --compile measures it (`compile_module`).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager, Iterable

import torch
from torch import nn

from pipeline.config import FAST_MODES as MODES
from pipeline.data import imageset

DEVICE_DATA_SHARE = 0.5   # keep the crops on the GPU only when they use at most this share of its free memory
CPU_BF16_ENV = "GCN_BENCH_CPU_BF16"   # "1": bf16 autocast on CPU too, so the GPU-lease rehearsal runs CUDA's precision path


def resolve(setting: str | bool | None, device: torch.device) -> bool:
    """Whether the fast path is on: `on`/`off` as given, `auto` (or None) = on.

    On CPU the fast path is channels_last (measured 1.1-1.3x faster with losses equal to within 3e-7,
    bench/results-cpu.md), plus bf16 autocast where the CPU computes bf16 natively (`precision`), so
    `auto` takes it there too.
    """
    if isinstance(setting, bool):
        return setting
    if setting in (None, "auto"):
        return True
    if setting not in MODES:
        raise ValueError(f"train.fast: invalid value {setting!r}; valid choices: {', '.join(MODES)}")
    return setting == "on"


def configure_backends(device: torch.device) -> None:
    """cuDNN autotuning: the input shapes never change during a run, so the best kernels are found once."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def memory_format(fast: bool) -> torch.memory_format:
    return torch.channels_last if fast else torch.contiguous_format


def set_memory_format(modules: Iterable[nn.Module | None], fast: bool) -> None:
    """channels_last weights for the fast path, the default layout otherwise (in place)."""
    for module in modules:
        if module is not None:
            module.to(memory_format=memory_format(fast))


# CPU flags (Linux /proc/cpuinfo names) of native bf16 arithmetic: AVX512-BF16 dot products or AMX tiles
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("bf16", "fp32")


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux names them (empty when /proc/cpuinfo cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), as torch sees it, else as Linux does.

    Detected, never assumed: without it oneDNN emulates bf16 and a training step is many times
    slower than in fp32.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(p() for p in probes)
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))  # torch builds without the probes


def precision(device: torch.device, fast: bool) -> str:
    """The training precision: `bf16` (autocast) on the fast path where the device computes bf16 natively, else `fp32`.

    With the environment variable GCN_BENCH_CPU_BF16=1 the fast path takes bf16 on any CPU
    (pipeline.lease --rehearse: the CUDA path's precision, rehearsed on a CPU; emulated there, so slow).
    """
    if not fast:
        return "fp32"
    kind = torch.device(device).type
    cpu_bf16 = native_bf16_cpu() or os.environ.get(CPU_BF16_ENV) == "1"
    return "bf16" if kind == "cuda" or (kind == "cpu" and cpu_bf16) else "fp32"


def autocast(device: torch.device, dtype: str) -> Callable[[], ContextManager]:
    """A factory of the forward-pass context: bf16 autocast for `dtype` bf16 (pipeline.training.fast.precision), else nothing."""
    if dtype not in PRECISIONS:
        raise ValueError(f"precision: invalid value {dtype!r}; valid choices: {', '.join(PRECISIONS)}")
    if dtype == "bf16":
        kind = torch.device(device).type
        return lambda: torch.autocast(kind, dtype=torch.bfloat16)
    return nullcontext


def adam(params, lr: float, betas: tuple[float, float], device: torch.device, fast: bool) -> torch.optim.Adam:
    """Adam; fused into one kernel per step on CUDA in the fast path."""
    fused = fast and torch.device(device).type == "cuda"
    return torch.optim.Adam(params, lr=lr, betas=betas, **({"fused": True} if fused else {}))


def compile_module(module: nn.Module) -> nn.Module:
    """torch.compile a network (bench only; see the module docstring)."""
    return torch.compile(module)


class Batches:
    """The mini-batches of a run as (lr, hr) in [-1,1] on `device`, by 1-based global step.

    `indices(step)` gives the batch indices of a step (pipeline.training.train.batch_indices). Plain path:
    gather on the host, convert, copy to the device at each step. Fast path: uint8 crops and the
    index table of `steps` live on the device (or in pinned host memory when they would take more
    than DEVICE_DATA_SHARE of the GPU's free memory); batches come out channels_last.
    """

    def __init__(self, lr_u8: torch.Tensor, hr_u8: torch.Tensor, indices: Callable[[int], torch.Tensor],
                 device: torch.device, fast: bool, steps: range | None = None) -> None:
        self.indices, self.device, self.fast = indices, torch.device(device), fast
        self.lr, self.hr = lr_u8, hr_u8
        self.table, self.first = None, None
        if not fast:
            return
        store = self.device
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if lr_u8.nbytes + hr_u8.nbytes > DEVICE_DATA_SHARE * free:
                store = torch.device("cpu")    # too large: gather on the host, copy asynchronously
        self.store = store
        if store.type == "cuda":
            self.lr, self.hr = lr_u8.to(store), hr_u8.to(store)
        elif self.device.type == "cuda":
            self.lr, self.hr = lr_u8.pin_memory(), hr_u8.pin_memory()
        if steps is not None and len(steps):
            self.first = steps.start
            self.table = torch.stack([indices(s) for s in steps]).to(store)

    def _index(self, step: int) -> torch.Tensor:
        if self.table is not None and 0 <= step - self.first < len(self.table):
            return self.table[step - self.first]
        return self.indices(step).to(self.lr.device)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.fast:
            idx = self.indices(step)
            return imageset.to_unit(self.lr[idx]).to(self.device), imageset.to_unit(self.hr[idx]).to(self.device)
        idx = self._index(step)
        lr, hr = self.lr.index_select(0, idx), self.hr.index_select(0, idx)
        if lr.device != self.device:
            lr, hr = lr.pin_memory().to(self.device, non_blocking=True), hr.pin_memory().to(self.device, non_blocking=True)
        fmt = torch.channels_last
        return (imageset.to_unit(lr).contiguous(memory_format=fmt),
                imageset.to_unit(hr).contiguous(memory_format=fmt))
