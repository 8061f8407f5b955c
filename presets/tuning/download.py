"""The tuning job's ``data-downloader`` init container, ``python3 -m presets.tuning.download``:
downloads the dataset URLs of a tuning Workspace into the data volume before the trainer starts.
Stdlib only (``urllib.request``).

Each URL is fetched over http or https (any other scheme is refused before anything is
downloaded) with up to ``--attempts`` attempts ``--delay`` seconds apart. A download succeeds on
``200 OK`` with a non-empty body of at most ``--max-bytes``; 4xx answers other than 408 and 429
are final, 5xx, 408, 429, lost connections and timeouts are retried, and a body over the limit is
refused at once (from ``Content-Length`` when the server sends one, else while streaming). The
body goes to a hidden temporary file in the destination and is renamed when complete, so the
trainer never sees a partial file under its final name.

Files are named after the URL's last path segment (see :func:`safe_name`), keeping the extension
the trainer picks the dataset by. URLs are shown only through :func:`redact`: signed URLs carry
their tokens in the query string, and user:password@ in the authority is sent as a basic-auth
header, never printed. The first failure stops the run with exit code 1 and a one-line message on
stderr that is also written to the termination log, which Kubernetes shows as the container's
termination message.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from http import HTTPStatus
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

__all__ = [
    "DEFAULT_MAX_BYTES",
    "TERMINATION_LOG",
    "DownloadError",
    "download",
    "main",
    "redact",
    "safe_name",
    "termination_log_path",
    "write_termination_log",
]

SCHEMES = ("http", "https")
DEFAULT_ATTEMPTS = 3
DEFAULT_DELAY_S = 2.0
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BYTES = 100 * 1024**3
TERMINATION_LOG = "/dev/termination-log"


def termination_log_path() -> Path:
    """Where Kubernetes reads the termination message: ``$KAITEN_TERMINATION_LOG`` (set by the
    embedded stack's local pod runner) or the default ``/dev/termination-log``."""
    return Path(os.environ.get("KAITEN_TERMINATION_LOG") or TERMINATION_LOG)


MAX_NAME = 200
USER_AGENT = "kaiten-data-downloader"

_MAX_EXTENSION = 16  # a longer "extension" is part of the name, not a file type
_CHUNK = 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RETRIED_CLIENT_ERRORS = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})


class DownloadError(Exception):
    """A download that failed; the message names the redacted URL and the cause, on one line."""


class _AttemptError(Exception):
    """One attempt that failed: why, and whether another attempt could go better."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


# ---------------------------------------------------------------- names and redaction


def redact(url: str) -> str:
    """``url`` safe to print: ``scheme://host[:port]/path``, plus ``?...`` when it had a query.
    The user and password of the authority, the query string and the fragment never show."""
    shown, _userinfo, query, _fragment = _pieces(url)
    return f"{shown}?..." if query else shown


def _pieces(url: str) -> tuple[str, str, str, str]:
    """``url`` split without validation (so that even a malformed URL is redacted) into the URL
    without userinfo, query and fragment, then the userinfo, the query and the fragment."""
    rest, _hash, fragment = url.partition("#")
    rest, _question, query = rest.partition("?")
    scheme, separator, rest = rest.partition("://")
    if not separator:
        scheme, rest = "", scheme
    authority, slash, path = rest.partition("/")
    userinfo, _at, host = authority.rpartition("@")
    return f"{scheme}{separator}{host}{slash}{path}", userinfo, query, fragment


def safe_name(url: str, index: int, taken: Collection[str]) -> str:
    """The file name for the ``index``-th URL (from 1): the URL's last path segment,
    percent-decoded, without query and fragment; characters other than ``A-Z a-z 0-9 . _ -``
    become ``_`` and leading dots go. An empty name (or ``.``, ``..``) becomes ``data-<index>``,
    a name over 200 characters is cut keeping its extension, and a name already in ``taken``
    gets ``-2``, ``-3``... before its extension. ``taken`` is not changed."""
    segment = unquote(urlsplit(url).path.rpartition("/")[2])
    name = _UNSAFE.sub("_", segment).lstrip(".") or f"data-{index}"
    stem, extension = _split_extension(name)
    candidate, number = _fit(stem, "", extension), 2
    while candidate in taken:
        candidate, number = _fit(stem, f"-{number}", extension), number + 1
    return candidate


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) + 1 > _MAX_EXTENSION:
        return name, ""
    return stem, f".{extension}"


def _fit(stem: str, suffix: str, extension: str) -> str:
    return f"{stem[: MAX_NAME - len(suffix) - len(extension)]}{suffix}{extension}"


def _scrub(text: str, url: str) -> str:
    """``text`` (an exception's message) without the secrets ``url`` carries."""
    _shown, userinfo, query, fragment = _pieces(url)
    for secret in sorted({url, userinfo, query, fragment}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "...")
    return text


# ---------------------------------------------------------------- downloading


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib alone would also follow ftp)."""

    def redirect_request(  # noqa: PLR0917 -- urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urlsplit(newurl).scheme.lower()
        if scheme not in SCHEMES:
            fp.close()
            raise _AttemptError(
                f"HTTP {code} redirected to a {scheme} URL (only http and https are followed)",
                retry=False,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as error:
        raise DownloadError(f"{redact(url)} is not a valid URL") from error
    if parts.scheme.lower() not in SCHEMES:
        raise DownloadError(
            f"refusing to download {redact(url)}: only http and https URLs are supported"
        )
    if not parts.hostname:
        raise DownloadError(f"refusing to download {redact(url)}: it names no host")


def _request(url: str) -> urllib.request.Request:
    """A GET for ``url``; a user and password in its authority become a basic-auth header that
    is not sent on to where a redirect points."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        request = urllib.request.Request(url)  # noqa: S310 -- _check_url allows http(s) only
    else:
        host = parts.netloc.rpartition("@")[2]
        request = urllib.request.Request(parts._replace(netloc=host).geturl())  # noqa: S310
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        token = base64.b64encode(pair.encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    request.add_header("User-Agent", USER_AGENT)
    return request


_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (TimeoutError, "timed out"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "the server closed the connection"),
    (http.client.IncompleteRead, "the server closed the connection before the end of the body"),
)


def _describe(error: BaseException, url: str) -> str:
    """The cause of a failed request in a few words, without the URL's secrets."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    for kind, cause in _CAUSES:
        if isinstance(error, kind):
            return cause
    if isinstance(error, socket.gaierror):
        text = f"the host name could not be resolved ({error.strerror})"
    elif isinstance(error, ssl.SSLCertVerificationError):
        text = f"TLS certificate verification failed: {error.verify_message}"
    elif isinstance(error, ssl.SSLError):
        text = f"TLS failed: {error.reason}"
    elif isinstance(error, urllib.error.URLError):
        text = str(error.reason)
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = f"{type(error).__name__}: {error}"
    return _scrub(text, url)


def _status_failure(code: int, reason: str) -> _AttemptError:
    phrase = reason
    if not phrase:
        with contextlib.suppress(ValueError):
            phrase = HTTPStatus(code).phrase
    retry = code >= HTTPStatus.INTERNAL_SERVER_ERROR or code in _RETRIED_CLIENT_ERRORS
    return _AttemptError(f"HTTP {code} {phrase}".rstrip(), retry=retry)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _fetch(
    opener: urllib.request.OpenerDirector,
    url: str,
    sink: IO[bytes],
    *,
    timeout_s: float,
    max_bytes: int,
) -> int:
    """One attempt: the body of ``url`` written to ``sink``; returns its size."""
    try:
        response = opener.open(_request(url), timeout=timeout_s)
    except urllib.error.HTTPError as error:
        with error:
            raise _status_failure(error.code, str(error.reason or "")) from error
    except http.client.InvalidURL as error:
        raise _AttemptError(f"invalid URL: {_describe(error, url)}", retry=False) from error
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise _AttemptError(_describe(error, url), retry=True) from error
    with response:
        if response.status != HTTPStatus.OK:
            failure = _status_failure(response.status, response.reason)
            raise _AttemptError(f"{failure.reason} (expected 200 OK)", retry=False)
        expected = _content_length(response)
        if expected is not None and expected > max_bytes:
            raise _AttemptError(
                f"{expected} bytes exceeds the limit of {max_bytes} bytes", retry=False
            )
        received = _stream(response, sink, url, max_bytes)
    if expected is not None and received < expected:
        raise _AttemptError(
            f"the server closed the connection after {received} of {expected} bytes", retry=True
        )
    if received == 0:
        raise _AttemptError("the server sent an empty file", retry=True)
    return received


def _stream(response: http.client.HTTPResponse, sink: IO[bytes], url: str, max_bytes: int) -> int:
    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (http.client.HTTPException, OSError) as error:
            raise _AttemptError(_describe(error, url), retry=True) from error
        if not chunk:
            return received
        received += len(chunk)
        if received > max_bytes:
            raise _AttemptError(f"the body exceeds the limit of {max_bytes} bytes", retry=False)
        try:
            sink.write(chunk)
        except OSError as error:
            raise _AttemptError(f"cannot write the file: {error.strerror}", retry=False) from error


def download(
    url: str,
    path: Path,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    delay_s: float = DEFAULT_DELAY_S,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Download ``url`` (http or https) to ``path`` and return its size in bytes. The body goes
    to a hidden temporary file next to ``path``, renamed once complete and removed on failure.
    Raises :class:`DownloadError` once the attempts are spent or on a failure that another
    attempt would not change (a 4xx other than 408/429, a body over ``max_bytes``)."""
    _check_url(url)
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part"
        )
    except OSError as error:
        raise DownloadError(
            f"download of {redact(url)} failed: cannot write to {path.parent}: {error.strerror}"
        ) from error
    try:
        with os.fdopen(handle, "wb") as sink:
            size = _attempts(
                opener,
                url,
                sink,
                attempts=attempts,
                delay_s=delay_s,
                timeout_s=timeout_s,
                max_bytes=max_bytes,
                sleep=sleep,
            )
        Path(temporary).chmod(0o644)  # the trainer may run as another user
        Path(temporary).replace(path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise DownloadError(
            f"download of {redact(url)} failed: cannot write {path}: {error.strerror}"
        ) from error
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size


def _attempts(
    opener: urllib.request.OpenerDirector,
    url: str,
    sink: IO[bytes],
    *,
    attempts: int,
    delay_s: float,
    timeout_s: float,
    max_bytes: int,
    sleep: Callable[[float], None],
) -> int:
    for attempt in range(1, attempts + 1):
        sink.seek(0)
        sink.truncate()
        try:
            return _fetch(opener, url, sink, timeout_s=timeout_s, max_bytes=max_bytes)
        except _AttemptError as failure:
            if not failure.retry or attempt == attempts:
                after = f" after {attempt} attempts" if attempt > 1 else ""
                raise DownloadError(
                    f"download of {redact(url)} failed{after}: {failure.reason}"
                ) from failure
            print(
                f"attempt {attempt} of {attempts} to download {redact(url)} failed: "
                f"{failure.reason}; retrying in {delay_s:g} s",
                file=sys.stderr,
                flush=True,
            )
            sleep(delay_s)
    raise AssertionError("unreachable: attempts is at least 1")


# ---------------------------------------------------------------- command line


def write_termination_log(path: Path, message: str) -> None:
    """Best effort: write ``message`` where Kubernetes reads the container's termination
    message; outside Kubernetes the path is usually not writable, which is fine."""
    with contextlib.suppress(OSError):
        path.write_text(message, encoding="utf-8")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m presets.tuning.download",
        description="Download dataset files over http(s) into a folder (the tuning job's "
        "data-downloader init container).",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="http or https URL of a file")
    parser.add_argument("--dest", type=Path, required=True, metavar="DIR", help="target folder")
    parser.add_argument(
        "--attempts",
        type=positive_int,
        default=DEFAULT_ATTEMPTS,
        help="attempts per URL (default %(default)s)",
    )
    parser.add_argument(
        "--delay",
        type=non_negative_float,
        default=DEFAULT_DELAY_S,
        metavar="SECONDS",
        help="pause between attempts (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="limit for connecting and for each read (default %(default)s)",
    )
    parser.add_argument(
        "--max-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help="largest file accepted (default %(default)s, 100 GiB)",
    )
    parser.add_argument(
        "--termination-log",
        type=Path,
        default=termination_log_path(),
        metavar="PATH",
        help="where the failure message goes too (default %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Download every URL into ``--dest``: exit 0, or 1 at the first failure with the reason
    on stderr and in the termination log."""
    args = _parser().parse_args(argv)
    try:
        for url in args.urls:  # refuse a bad URL before downloading anything
            _check_url(url)
        try:
            args.dest.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DownloadError(f"cannot create {args.dest}: {error.strerror}") from error
        names: list[str] = []
        for index, url in enumerate(args.urls, start=1):
            names.append(safe_name(url, index, names))
        for url, name in zip(args.urls, names, strict=True):
            path = args.dest / name
            size = download(
                url,
                path,
                attempts=args.attempts,
                delay_s=args.delay,
                timeout_s=args.timeout,
                max_bytes=args.max_bytes,
            )
            print(f"downloaded {redact(url)} -> {path} ({size} bytes)", flush=True)
    except DownloadError as error:
        message = " ".join(str(error).split())
        print(message, file=sys.stderr, flush=True)
        write_termination_log(args.termination_log, message)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
