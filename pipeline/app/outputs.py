"""Where the `gcn-bench` commands write: folders checked before any work, files written atomically.

A command first makes (and tries a write in) every folder it will write to, so a path it cannot write
stops it before the slow part with one line (`UserError`); when it then fails or is interrupted, the
folders it made are removed again (when still empty), so an error leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from pipeline.errors import UserError


def make_folder(folder: Path, label: str) -> list[Path]:
    """Create `folder` (and its missing parents); the folders it created, deepest first.

    `label` names the folder in the error (e.g. "--out sr"): a path that is a file, or one that
    cannot be created, is the user's to fix.
    """
    folder = Path(folder)
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{label}: {folder} is a file, not a folder")
    for parent in reversed(missing):
        try:
            parent.mkdir()
        except OSError as err:
            remove_empty([p for p in missing if p.exists()])
            raise UserError(f"{label}: cannot create the folder {parent} ({err.strerror or err})") from None
    return missing


def check_writable(folder: Path, label: str) -> None:
    """Write and delete a temporary file in `folder`: permissions and read-only file systems, checked."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(f"{label}: cannot write in {folder} ({err.strerror or err})") from None


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove each folder (deepest first) when it is empty; a folder that gained files is kept."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


@contextlib.contextmanager
def output_folders(folders: dict[Path, str]) -> Iterator[None]:
    """Make and check every output folder ({folder: label}) before the block; undo what was made if it fails."""
    created: list[Path] = []
    try:
        for folder, label in folders.items():
            created = make_folder(folder, label) + created
            check_writable(folder, label)
        yield
    except BaseException:
        remove_empty(created)
        raise


def check_target(path: Path, label: str) -> None:
    """An output file's path must not name an existing folder (the final rename would fail after the work)."""
    if Path(path).is_dir():
        raise UserError(f"{label}: {path} is a folder; give a file name")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file handle on a temporary file beside `path`, renamed into place when the block succeeds."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary files of the user's
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
