"""Training progress for the tuner to read: ``ProgressSink`` keeps the latest snapshot and writes
it atomically to ``progress.json`` in the output directory, and ``ProgressServer`` answers
``GET /progress`` (the same JSON) and ``GET /health`` from a daemon thread. Stdlib only."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["DEFAULT_PORT", "PROGRESS_FILE", "ProgressServer", "ProgressSink"]

PROGRESS_FILE = "progress.json"
DEFAULT_PORT = 5000
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 -- the pod's port must be reachable from the tuner


class ProgressSink:
    """The latest progress snapshot, thread-safe. ``report`` replaces it and rewrites
    ``<directory>/progress.json`` (write to a temporary file, then rename), so a reader never sees
    a partial file. Keys: step, total_steps, loss, eta_seconds, epoch, elapsed_seconds, state
    (``starting``, ``training``, then ``completed`` once the adapter is saved) and updated_at
    (ISO 8601, UTC)."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / PROGRESS_FILE
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = _snapshot(
            step=0, total_steps=None, loss=None, eta_seconds=None, epoch=None, elapsed_seconds=0.0
        ) | {"state": "starting"}

    def report(
        self,
        *,
        step: int,
        total_steps: int | None,
        loss: float | None,
        eta_seconds: float | None,
        epoch: float | None,
        elapsed_seconds: float,
    ) -> None:
        """Replace the snapshot (state ``training``) and rewrite the file."""
        snapshot = _snapshot(
            step=step,
            total_steps=total_steps,
            loss=loss,
            eta_seconds=eta_seconds,
            epoch=epoch,
            elapsed_seconds=elapsed_seconds,
        ) | {"state": "training"}
        with self._lock:
            self._snapshot = snapshot
            self._write(snapshot)

    def complete(self) -> None:
        """Mark the run completed (the adapter and the marker are written) and rewrite the file."""
        with self._lock:
            self._snapshot = self._snapshot | {
                "state": "completed",
                "eta_seconds": 0.0,
                "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
            self._write(self._snapshot)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._snapshot)

    def _write(self, snapshot: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{PROGRESS_FILE}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(snapshot) + "\n", encoding="utf-8")
        temporary.replace(self.path)


def _snapshot(
    *,
    step: int,
    total_steps: int | None,
    loss: float | None,
    eta_seconds: float | None,
    epoch: float | None,
    elapsed_seconds: float,
) -> dict[str, Any]:
    return {
        "step": step,
        "total_steps": total_steps,
        "loss": loss,
        "eta_seconds": None if eta_seconds is None else round(eta_seconds, 3),
        "epoch": epoch,
        "elapsed_seconds": round(elapsed_seconds, 3),
        "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


class ProgressServer:
    """``GET /progress`` and ``GET /health`` over HTTP for one sink, on a daemon thread. Port 0
    picks a free port (see ``port`` after entering). Use as a context manager."""

    def __init__(
        self, sink: ProgressSink, *, port: int = DEFAULT_PORT, host: str = ALL_INTERFACES
    ) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler_for(sink))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="progress-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> ProgressServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def _handler_for(sink: ProgressSink) -> type[BaseHTTPRequestHandler]:
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/progress":
                self._send(200, sink.snapshot())
            elif path == "/health":
                self._send(200, {"status": "ok", "uptime_seconds": time.monotonic() - started})
            else:
                self._send(404, {"error": f"no such path: {path} (try /progress or /health)"})

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tuner polls often and the job's log is for training."""

    return Handler
