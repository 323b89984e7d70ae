"""File helpers every stage shares: checksums and atomic writes of files and folders (a killed stage never leaves half a file)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary project files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: object) -> None:
    """Atomically write indented JSON with a trailing newline."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> object | None:
    """The parsed JSON of a file, or None when it is missing or unreadable (optional records)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# ---------------------------------------------------------------- records: numbers beside their provenance

LABEL_CHARS = 32   # the longest string kept beside the numbers: a method, dataset or device name


def _is_short(value: object) -> bool:
    """A number, a boolean, null or a short label: what a metrics file holds."""
    if isinstance(value, str):
        return len(value) <= LABEL_CHARS
    return value is None or isinstance(value, (bool, int, float))


def split_record(record: dict) -> tuple[dict, dict]:
    """(numbers, provenance) of a record: numbers and short labels, and the text beside them.

    A leaf stays with the numbers when it is short (`_is_short`) or a list of short values; any other
    leaf (a sentence, a sha256, a list of records) goes to the provenance under the same keys, so
    `merge_record(*split_record(r)) == r` (pipeline.reporting.report reads them back so). Metrics files hold only the first part, which keeps
    `dvc metrics show` and `dvc exp show` free of sentences.
    """
    numbers: dict = {}
    provenance: dict = {}
    for key, value in record.items():
        if isinstance(value, dict):
            inner_numbers, inner_provenance = split_record(value)
            if inner_numbers or not inner_provenance:
                numbers[key] = inner_numbers
            if inner_provenance:
                provenance[key] = inner_provenance
        elif _is_short(value) or (isinstance(value, list) and all(_is_short(v) for v in value)):
            numbers[key] = value
        else:
            provenance[key] = value
    return numbers, provenance


def merge_record(numbers: dict, provenance: dict) -> dict:
    """The record `split_record` split: the provenance's keys put back beside the numbers."""
    out = dict(numbers)
    for key, value in provenance.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_record(out[key], value)
        else:
            out[key] = value
    return out


def provenance_path(path: Path) -> Path:
    """Where the provenance of the record file `path` lives: <name>-provenance.json beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}-provenance.json")


def write_record(path: Path, record: dict) -> None:
    """Write a record as two JSON files: its numbers at `path`, its provenance beside it (`provenance_path`)."""
    numbers, provenance = split_record(record)
    atomic_write_json(path, numbers)
    atomic_write_json(provenance_path(path), provenance)


@contextlib.contextmanager
def staged(dest: Path) -> Iterator[Path]:
    """A temporary folder beside `dest` that replaces it only when the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700; these are ordinary project folders
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
