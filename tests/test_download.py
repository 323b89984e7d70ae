"""pipeline.data.download against a real HTTP server on 127.0.0.1 (resume, retries, checksums, clear errors)."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import threading

import pytest

from pipeline.data.download import download
from pipeline.errors import UserError

BLOB = os.urandom(300_000)


class Server:
    """A threaded HTTP server serving `files`, with per-path behaviours chosen by URL prefix.

    /plain/NAME     honours Range requests (206 + Content-Range)
    /norange/NAME   ignores Range and always answers 200 with the whole file
    /truncate/NAME  the first request announces the full length but sends only half, then hangs up
    /flaky/NAME     the first request gets 503
    anything else   404
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                first = server.hits[self.path] == 1
                match = re.match(r"/(plain|norange|truncate|flaky)/(.+)", self.path)
                if not match or match.group(2) not in server.files:
                    self.send_error(404, "Not Found")
                    return
                mode, body = match.group(1), server.files[match.group(2)]
                if mode == "flaky" and first:
                    self.send_error(503, "Service Unavailable")
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and mode != "norange":
                    start = int(re.match(r"bytes=(\d+)-", ranged).group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if mode == "truncate" and first:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    srv.files["blob.bin"] = BLOB
    yield srv
    srv.close()


def free_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_plain_download_returns_digest_and_leaves_no_part(server, tmp_path):
    dest = tmp_path / "sub" / "blob.bin"
    digest = download(f"{server.url}/plain/blob.bin", dest, sha256=sha(BLOB), size=len(BLOB))
    assert digest == sha(BLOB)
    assert dest.read_bytes() == BLOB
    assert not dest.with_name("blob.bin.part").exists()


def test_resume_after_truncated_transfer(server, tmp_path):
    dest = tmp_path / "blob.bin"
    digest = download(f"{server.url}/truncate/blob.bin", dest, backoff=0.01)
    assert digest == sha(BLOB)
    assert dest.read_bytes() == BLOB
    # The second request asked only for the missing half.
    ranges = [r for path, r in server.requests if path == "/truncate/blob.bin"]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(BLOB) // 2}-"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(BLOB[:1000])
    assert download(f"{server.url}/plain/blob.bin", dest) == sha(BLOB)
    assert server.requests == [("/plain/blob.bin", "bytes=1000-")]
    assert dest.read_bytes() == BLOB


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 5000)   # stale bytes that must not survive
    assert download(f"{server.url}/norange/blob.bin", dest) == sha(BLOB)
    assert server.requests[0][1] == "bytes=5000-"
    assert dest.read_bytes() == BLOB


def test_transient_5xx_is_retried(server, tmp_path):
    dest = tmp_path / "blob.bin"
    assert download(f"{server.url}/flaky/blob.bin", dest, backoff=0.01) == sha(BLOB)
    assert server.hits["/flaky/blob.bin"] == 2


def test_checksum_mismatch_rejected_and_nothing_left(server, tmp_path):
    dest = tmp_path / "blob.bin"
    wrong = "0" * 64
    with pytest.raises(UserError) as err:
        download(f"{server.url}/plain/blob.bin", dest, sha256=wrong)
    message = str(err.value)
    assert wrong in message and sha(BLOB) in message
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_rejected_and_nothing_left(server, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(UserError, match=f"expected {len(BLOB) + 1} bytes, got {len(BLOB)}"):
        download(f"{server.url}/plain/blob.bin", dest, size=len(BLOB) + 1)
    assert list(tmp_path.iterdir()) == []


def test_404_names_url_and_hand_placement_path(server, tmp_path):
    dest = tmp_path / "data" / "missing.tar.gz"
    url = f"{server.url}/plain/missing.tar.gz"
    with pytest.raises(UserError) as err:
        download(url, dest)
    message = str(err.value)
    assert url in message and "404" in message
    assert str(dest.resolve()) in message
    assert "\n" not in message
    assert not dest.exists()


def test_refused_connection_names_url_and_hand_placement_path(tmp_path):
    dest = tmp_path / "archive.zip"
    url = f"http://127.0.0.1:{free_port()}/archive.zip"
    with pytest.raises(UserError) as err:
        download(url, dest, backoff=0.01)
    message = str(err.value)
    assert url in message and "refused" in message
    assert str(dest.resolve()) in message
    assert "\n" not in message


def test_file_placed_by_hand_is_used_offline(tmp_path):
    dest = tmp_path / "archive.zip"
    dest.write_bytes(BLOB)
    url = f"http://127.0.0.1:{free_port()}/archive.zip"   # nothing listens: any network use would fail
    assert download(url, dest, sha256=sha(BLOB)) == sha(BLOB)
    with pytest.raises(UserError, match="sha256 mismatch"):
        download(url, dest, sha256="1" * 64)
    assert dest.read_bytes() == BLOB   # a wrong hand-placed file is reported, not deleted


def test_file_url(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(BLOB)
    dest = tmp_path / "out" / "copy.bin"
    assert download(source.as_uri(), dest, size=len(BLOB)) == sha(BLOB)
    assert dest.read_bytes() == BLOB
    with pytest.raises(UserError, match=re.escape(str((tmp_path / "out" / "gone.bin").resolve()))):
        download((tmp_path / "gone.bin").as_uri(), tmp_path / "out" / "gone.bin")
