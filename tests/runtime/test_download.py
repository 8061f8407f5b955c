"""The tuning job's data downloader against a real HTTP server on 127.0.0.1 that each test
scripts: files land under safe names and only whole, retries happen where another attempt can
help and nowhere else, and no output ever shows a URL's query string or password."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localdev.infra import free_port
from presets.tuning.download import main, redact, safe_name


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``length`` overrides the Content-Length header (``None``: the
    body's size); ``close_delimited`` sends none and ends the body by closing the connection."""

    status: int = 200
    body: bytes = b""
    length: int | None = None
    close_delimited: bool = False
    location: str | None = None
    delay_s: float = 0.0


@dataclass
class FileServer:
    """Serves scripted replies per path (query ignored); each request takes the next reply of
    its path, and the last one repeats. Unknown paths answer 404."""

    routes: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
        return self.url(path)

    def hits(self, path: str) -> int:
        return sum(1 for target, _ in self.requests if target.split("?", 1)[0] == path)

    def next_reply(self, target: str, headers: dict[str, str]) -> Reply:
        with self.lock:
            self.requests.append((target, headers))
            replies = self.routes.get(target.split("?", 1)[0])
            if not replies:
                return Reply(status=404, body=b"no such file")
            return replies.pop(0) if len(replies) > 1 else replies[0]


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = server.next_reply(self.path, dict(self.headers.items()))
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                if not reply.close_delimited:
                    length = len(reply.body) if reply.length is None else reply.length
                    self.send_header("Content-Length", str(length))
                if reply.location is not None:
                    self.send_header("Location", reply.location)
                self.end_headers()
                self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the downloader hung up on purpose (a body over the limit)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@pytest.fixture
def server() -> Iterator[FileServer]:
    files = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    httpd.daemon_threads = True
    files.port = int(httpd.server_address[1])
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.02,), name="file-server", daemon=True
    )
    thread.start()
    yield files
    httpd.shutdown()
    thread.join(timeout=5)
    httpd.server_close()


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    log: str | None  # the termination log, None when not written


def _download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], *urls: str, extra: tuple[str, ...] = ()
) -> Run:
    log = tmp_path / "termination-log"
    argv = ["--dest", str(tmp_path / "data"), "--delay", "0", "--termination-log", str(log)]
    code = main([*argv, *extra, *urls])
    captured = capsys.readouterr()
    text = log.read_text(encoding="utf-8") if log.exists() else None
    return Run(code, captured.out, captured.err, text)


def _files(tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "data"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def _failed(run: Run, message: str) -> None:
    """Exit 1 with ``message`` as the last line of stderr and as the termination log."""
    assert run.code == 1
    assert run.err.splitlines()[-1] == message
    assert run.log == message


# ---------------------------------------------------------------- success


def test_downloads_each_url_under_its_name(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet, jsonl = os.urandom(3000), b'{"text": "hello"}\n'
    first = server.serve("/datasets/train-0000.parquet", Reply(body=parquet))
    second = server.serve("/files/eval.jsonl", Reply(body=jsonl))

    run = _download(tmp_path, capsys, f"{first}?download=true", second)

    assert run.code == 0, run.err
    assert _files(tmp_path) == {"train-0000.parquet": parquet, "eval.jsonl": jsonl}
    data = tmp_path / "data"
    assert run.out.splitlines() == [
        f"downloaded {first}?... -> {data / 'train-0000.parquet'} (3000 bytes)",
        f"downloaded {second} -> {data / 'eval.jsonl'} ({len(jsonl)} bytes)",
    ]
    assert run.err == ""
    assert run.log is None
    assert (data / "eval.jsonl").stat().st_mode & 0o777 == 0o644


def test_same_names_get_numbered(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [server.serve(f"/{folder}/a.json", Reply(body=folder.encode())) for folder in "xyz"]
    urls.append(server.serve("/", Reply(body=b"root")))

    run = _download(tmp_path, capsys, *urls, extra=("--dest", str(tmp_path / "data" / "nested")))

    assert run.code == 0, run.err
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "nested").iterdir()} == {
        "a.json": b"x",
        "a-2.json": b"y",
        "a-3.json": b"z",
        "data-4": b"root",
    }


def test_follows_http_redirects(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.serve("/blobs/abc", Reply(body=b"a,b\n1,2\n"))
    url = server.serve("/data/train.csv", Reply(status=302, location="/blobs/abc?sig=x"))

    run = _download(tmp_path, capsys, url)

    assert run.code == 0, run.err
    assert _files(tmp_path) == {"train.csv": b"a,b\n1,2\n"}


# ---------------------------------------------------------------- retries


def test_retries_server_errors(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve(
        "/train.jsonl", Reply(status=503), Reply(status=503), Reply(body=b'{"a": 1}\n')
    )

    run = _download(tmp_path, capsys, url)

    assert run.code == 0, run.err
    assert server.hits("/train.jsonl") == 3
    assert _files(tmp_path) == {"train.jsonl": b'{"a": 1}\n'}
    assert run.err.splitlines() == [
        f"attempt 1 of 3 to download {url} failed: HTTP 503 Service Unavailable; retrying in 0 s",
        f"attempt 2 of 3 to download {url} failed: HTTP 503 Service Unavailable; retrying in 0 s",
    ]
    assert run.log is None


@pytest.mark.parametrize("status", [408, 429, 500, 502])
def test_retried_statuses(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int
) -> None:
    url = server.serve("/a.csv", Reply(status=status), Reply(body=b"x,y\n"))
    assert _download(tmp_path, capsys, url).code == 0
    assert server.hits("/a.csv") == 2


def test_gives_up_after_the_attempts(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/a.csv", Reply(status=500))
    run = _download(tmp_path, capsys, url, extra=("--attempts", "4"))
    _failed(run, f"download of {url} failed after 4 attempts: HTTP 500 Internal Server Error")
    assert server.hits("/a.csv") == 4
    assert _files(tmp_path) == {}


@pytest.mark.parametrize(
    ("status", "phrase"), [(404, "Not Found"), (403, "Forbidden"), (401, "Unauthorized")]
)
def test_client_errors_are_final(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    phrase: str,
) -> None:
    url = server.serve("/data/train.parquet", Reply(status=status))

    run = _download(tmp_path, capsys, url)

    _failed(run, f"download of {url} failed: HTTP {status} {phrase}")
    assert server.hits("/data/train.parquet") == 1
    assert _files(tmp_path) == {}


def test_empty_body_is_retried_then_fails(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/empty.json", Reply(body=b""))
    run = _download(tmp_path, capsys, url)
    _failed(run, f"download of {url} failed after 3 attempts: the server sent an empty file")
    assert server.hits("/empty.json") == 3
    assert _files(tmp_path) == {}


def test_truncated_body_is_retried(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = os.urandom(100)
    url = server.serve("/t.arrow", Reply(body=whole[:50], length=100), Reply(body=whole))

    run = _download(tmp_path, capsys, url)

    assert run.code == 0, run.err
    assert "after 50 of 100 bytes" in run.err
    assert _files(tmp_path) == {"t.arrow": whole}


def test_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/data/train.parquet?sig=SECRET"
    run = _download(tmp_path, capsys, url)
    _failed(run, f"download of {redact(url)} failed after 3 attempts: connection refused")
    assert "SECRET" not in run.err


def test_timeout(server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = server.serve("/slow.csv", Reply(body=b"a\n", delay_s=1.0))
    run = _download(tmp_path, capsys, url, extra=("--timeout", "0.2", "--attempts", "1"))
    _failed(run, f"download of {url} failed: timed out")
    assert _files(tmp_path) == {}


# ---------------------------------------------------------------- limits and refusals


def test_content_length_over_the_limit_is_refused_at_once(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/big.parquet", Reply(body=b"x" * 123))
    run = _download(tmp_path, capsys, url, extra=("--max-bytes", "100"))
    _failed(run, f"download of {url} failed: 123 bytes exceeds the limit of 100 bytes")
    assert server.hits("/big.parquet") == 1
    assert _files(tmp_path) == {}


def test_huge_content_length_is_refused_before_reading(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/huge.parquet", Reply(body=b"x" * 10, length=200 * 1024**3))
    run = _download(tmp_path, capsys, url)
    _failed(
        run,
        f"download of {url} failed: {200 * 1024**3} bytes exceeds the limit of "
        f"{100 * 1024**3} bytes",
    )


def test_streamed_body_over_the_limit_is_cut_off(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/stream.jsonl", Reply(body=b"y" * 150, close_delimited=True))
    run = _download(tmp_path, capsys, url, extra=("--max-bytes", "100"))
    _failed(run, f"download of {url} failed: the body exceeds the limit of 100 bytes")
    assert server.hits("/stream.jsonl") == 1
    assert _files(tmp_path) == {}  # no temporary file either


def test_unexpected_success_status_is_refused(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/partial.csv", Reply(status=206, body=b"a,b\n"))
    run = _download(tmp_path, capsys, url)
    _failed(run, f"download of {url} failed: HTTP 206 Partial Content (expected 200 OK)")


def test_redirect_to_another_scheme_is_refused(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/a.csv", Reply(status=302, location="ftp://example.com/a.csv"))
    run = _download(tmp_path, capsys, url)
    _failed(
        run,
        f"download of {url} failed: HTTP 302 redirected to a ftp URL "
        "(only http and https are followed)",
    )
    assert server.hits("/a.csv") == 1


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("ftp://user:pw@example.com/x.csv?sig=S", "ftp://example.com/x.csv?...", "only http"),
        ("file:///etc/passwd", "file:///etc/passwd", "only http"),
        ("s3://bucket/train.parquet", "s3://bucket/train.parquet", "only http"),
        ("example.com/train.csv", "example.com/train.csv", "only http"),
        ("https:///train.csv", "https:///train.csv", "it names no host"),
    ],
)
def test_other_schemes_are_refused_before_any_download(
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    shown: str,
    why: str,
) -> None:
    good = server.serve("/good.csv", Reply(body=b"a\n"))

    run = _download(tmp_path, capsys, good, url)

    assert run.code == 1
    assert run.log is not None
    assert run.log.startswith(f"refusing to download {shown}: {why}")
    assert run.err.strip() == run.log
    assert server.requests == []
    assert "pw" not in run.err
    assert "sig=S" not in run.err


def test_stops_at_the_first_failure(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = server.serve("/1.json", Reply(body=b"[1]"))
    missing = server.url("/2.json")
    third = server.serve("/3.json", Reply(body=b"[3]"))

    run = _download(tmp_path, capsys, first, missing, third)

    _failed(run, f"download of {missing} failed: HTTP 404 Not Found")
    assert _files(tmp_path) == {"1.json": b"[1]"}
    assert server.hits("/3.json") == 0


def test_unwritable_termination_log_is_ignored(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url("/missing.csv")
    log = tmp_path / "no" / "such" / "folder" / "termination-log"
    code = main(["--dest", str(tmp_path / "data"), "--termination-log", str(log), url])
    assert code == 1
    assert "HTTP 404 Not Found" in capsys.readouterr().err
    assert not log.exists()


@pytest.mark.parametrize(
    "flags",
    [("--attempts", "0"), ("--delay", "-1"), ("--timeout", "0"), ("--max-bytes", "0"), ()],
)
def test_bad_arguments(tmp_path: Path, flags: tuple[str, ...]) -> None:
    urls = ["http://127.0.0.1:1/a.csv"] if flags else []  # () : no URL at all
    with pytest.raises(SystemExit) as exit_info:
        main(["--dest", str(tmp_path), *flags, *urls])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------- secrets


def test_query_and_password_never_show(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.serve("/data/train.jsonl", Reply(body=b'{"text": "hi"}\n'))
    server.serve("/data/eval.jsonl", Reply(status=503), Reply(status=403))
    signed = f"http://alice:PASSWORD@127.0.0.1:{server.port}/data/train.jsonl?sig=SECRET&se=1"
    failing = server.url("/data/eval.jsonl?sig=SECRET#frag=SECRET")

    run = _download(tmp_path, capsys, signed, failing)

    assert run.code == 1
    assert _files(tmp_path) == {"train.jsonl": b'{"text": "hi"}\n'}
    assert run.out.startswith(f"downloaded http://127.0.0.1:{server.port}/data/train.jsonl?... -> ")
    _failed(
        run,
        f"download of {server.url('/data/eval.jsonl')}?... failed after 2 attempts: "
        "HTTP 403 Forbidden",
    )
    for text in (run.out, run.err, run.log or ""):
        assert "SECRET" not in text
        assert "PASSWORD" not in text
        assert "alice" not in text
    target, headers = server.requests[0]
    assert target == "/data/train.jsonl?sig=SECRET&se=1"  # the query is still sent
    assert headers["Authorization"] == f"Basic {base64.b64encode(b'alice:PASSWORD').decode()}"


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("url", "index", "taken", "expected"),
    [
        ("https://h/datasets/train-0000.parquet?download=true", 1, (), "train-0000.parquet"),
        ("https://h/d/a.json#section", 1, (), "a.json"),
        ("https://h/d/my%20file%2B1.json", 1, (), "my_file_1.json"),
        ("https://h/d/donn%C3%A9es.csv", 1, (), "donn_es.csv"),
        ("https://h/d/..%2F..%2Fetc%2Fpasswd", 1, (), "_.._etc_passwd"),
        ("https://h/d/.hidden.jsonl", 1, (), "hidden.jsonl"),
        ("https://h/d/...", 2, (), "data-2"),
        ("https://h/d/..", 3, (), "data-3"),
        ("https://h/d/.", 4, (), "data-4"),
        ("https://h/d/", 5, (), "data-5"),
        ("https://h", 6, (), "data-6"),
        ("https://h/d/README", 1, (), "README"),
        ("https://h/a.json", 2, ("a.json",), "a-2.json"),
        ("https://h/b/a.json", 3, ("a.json", "a-2.json"), "a-3.json"),
        ("https://h/README", 2, ("README",), "README-2"),
        ("https://h/archive.tar.gz", 2, ("archive.tar.gz",), "archive.tar-2.gz"),
        ("https://h/", 2, ("data-2",), "data-2-2"),
    ],
)
def test_safe_name(url: str, index: int, taken: tuple[str, ...], expected: str) -> None:
    assert safe_name(url, index, taken) == expected


def test_safe_name_cuts_long_names_keeping_the_extension() -> None:
    url = f"https://h/{'x' * 300}.parquet"
    name = safe_name(url, 1, ())
    assert len(name) == 200
    assert name == f"{'x' * 192}.parquet"
    second = safe_name(url, 2, (name,))
    assert len(second) == 200
    assert second.endswith("x-2.parquet")
    assert len(safe_name(f"https://h/{'y' * 300}", 1, ())) == 200


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://example.com/data/train.parquet?sig=abc&se=1",
            "https://example.com/data/train.parquet?...",
        ),
        ("https://user:pw@example.com:8443/x.csv", "https://example.com:8443/x.csv"),
        ("https://user@example.com/x.csv", "https://example.com/x.csv"),
        ("http://[::1]:8080/a?b=1", "http://[::1]:8080/a?..."),
        ("https://example.com/a#access_token=xyz", "https://example.com/a"),
        ("https://example.com/a?", "https://example.com/a"),
        ("https://example.com", "https://example.com"),
        ("https://example.com?token=1", "https://example.com?..."),
        ("https://example.com/a/b@c.json", "https://example.com/a/b@c.json"),
        ("ftp://u:p@host/x", "ftp://host/x"),
        ("http://[broken/x?sig=1", "http://[broken/x?..."),
        ("u:p@host/x?y=1", "host/x?..."),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
