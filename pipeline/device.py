"""Which torch device a stage runs on (train.device, the CLIs' --device).

Its own small module, so the stages that only need a device (evaluate, benchmark, the gcn-bench
CLI) do not import the trainer: an edit to pipeline/training/train.py then reruns training alone.
"""

from __future__ import annotations

import torch

from pipeline.errors import UserError


def choose_device(setting: str, option: str = "train.device") -> torch.device:
    """`auto` -> CUDA when present, else CPU; `cuda` without a GPU is the user's to fix (`option` names the setting)."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option}: cuda requested but no CUDA device is available; use auto or cpu")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")
