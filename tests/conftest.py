"""Shared test fixtures: where the repository and the spec's fixtures (../shared) are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def repo_root() -> Path:
    """The repository root (stage CLIs are run from here)."""
    return REPO


@pytest.fixture
def shared_dir() -> Path:
    """../shared beside the clone (third-party fixtures); skip when absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared (spec fixtures) is not beside this clone")
    return SHARED
