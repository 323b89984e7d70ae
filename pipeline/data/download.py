"""Download one file over HTTP(S) (or copy a file:// URL) safely.

A transfer goes to `<dest>.part`, resumes with an HTTP Range request after an interruption,
retries transient failures with exponential back-off, is checked against a declared size and
sha256, and only then is renamed into `dest` (os.replace), so a killed or corrupt download
never leaves a file that later stages trust. A missing file (404), an unknown host or a refused
connection stops at once with one line naming the URL and the path where the user can place
the file by hand to continue offline; a file already at `dest` is used without any network.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.fileio import sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 16
USER_AGENT = "gcn-bench/0.1 (python urllib)"
# HTTP statuses worth retrying: the server may answer differently a moment later.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth retrying (reset, truncated body, timeout, 5xx)."""



def _by_hand(url: str, dest: Path, reason: str) -> UserError:
    return UserError(f"cannot download {url}: {reason}; to continue offline, place the file by hand at {dest.resolve()}")


def _verify(path: Path, sha256: str | None, size: int | None, what: str) -> str:
    """Check a complete file against its declared size and digest; return the digest."""
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise UserError(f"{what}: size mismatch, expected {size} bytes, got {got_size}")
    digest = sha256_file(path)
    if sha256 is not None and digest.lower() != sha256.lower():
        raise UserError(f"{what}: sha256 mismatch, expected {sha256.lower()}, got {digest}")
    return digest


def _total_from_headers(response, offset: int) -> int | None:
    """Full size of the remote file from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range", "")
    match = re.match(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", content_range)
    if match and match.group(3) != "*":
        return int(match.group(3))
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return offset + int(length)
    return None


def _transfer(url: str, dest: Path, part: Path, timeout: float, started: list[bool]) -> None:
    """One attempt: fetch the missing bytes of `part` (all of them when the server ignores Range)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Our partial file is at least as long as the remote one: start again to be sure.
            part.unlink()
            raise _Transient(f"HTTP 416 for a range from byte {offset}") from None
        if err.code in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise _by_hand(url, dest, f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, socket.gaierror):
            raise _by_hand(url, dest, f"host not found ({reason.strerror or reason})") from None
        if isinstance(reason, ConnectionRefusedError) and not started[0]:
            raise _by_hand(url, dest, "connection refused") from None
        if isinstance(reason, (OSError, TimeoutError)):
            raise _Transient(str(reason)) from None
        raise _by_hand(url, dest, str(reason)) from None
    except (OSError, http.client.HTTPException) as err:
        raise _Transient(f"{type(err).__name__}: {err}") from None

    with response:
        started[0] = True
        status = getattr(response, "status", 200)
        if offset and status == 206:
            match = re.match(r"bytes\s+(\d+)-", response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink()
                raise _Transient("server answered a different range than asked; restarting")
            mode = "ab"
        else:
            if offset:
                log.info("%s: server ignored the range request; restarting from byte 0", url)
            offset, mode = 0, "wb"
        total = _total_from_headers(response, offset)
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=Path(urllib.parse.urlparse(url).path).name or url, file=sys.stderr,
                   disable=None, leave=False)
        try:
            with open(part, mode) as handle:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:
            raise _Transient(f"transfer interrupted at byte {received}: {type(err).__name__}") from None
        finally:
            bar.close()
    if total is not None and received < total:
        raise _Transient(f"transfer truncated at byte {received} of {total}")


def _copy_file_url(url: str, dest: Path, part: Path) -> None:
    source = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
    if not source.is_file():
        raise _by_hand(url, dest, f"no such file {source}")
    shutil.copyfile(source, part)


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             retries: int = 4, backoff: float = 0.5, timeout: float = 15.0) -> str:
    """Fetch `url` into `dest` and return its sha256 (hex).

    A file already at `dest` is checked and used without any network access (this is how a
    user continues offline). Otherwise the bytes go to `<dest>.part`, resumed with a Range
    request and retried `retries` times (back-off `backoff * 2**attempt` seconds) on transient
    failures; a declared `size`/`sha256` mismatch deletes the partial file and raises UserError.
    """
    dest = Path(dest)
    if dest.is_file():
        return _verify(dest, sha256, size, f"{dest} (placed earlier; delete it to download again)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    if urllib.parse.urlparse(url).scheme == "file":
        _copy_file_url(url, dest, part)
    else:
        started = [part.exists() and part.stat().st_size > 0]
        for attempt in range(retries + 1):
            try:
                _transfer(url, dest, part, timeout, started)
                break
            except _Transient as err:
                if attempt == retries:
                    raise _by_hand(url, dest, f"{err} (gave up after {retries + 1} attempts)") from None
                wait = backoff * 2 ** attempt
                log.warning("%s: %s; retrying in %.1f s", url, err, wait)
                time.sleep(wait)
    try:
        digest = _verify(part, sha256, size, url)
    except UserError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return digest
