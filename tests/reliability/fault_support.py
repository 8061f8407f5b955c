"""Helpers of ``test_api_faults``: the development cluster's fault control (``/_kaiten/faults``)
driven from outside its process, with a tally of the faults that actually fired, and a fake ARM
that records which answers were faults.

The cluster's control is what the emulator offers (``localdev/kubeapi/server.py``, ``Faults``):
the next ``count`` resource requests, whatever their method or path, answer ``code`` (429 with
``Retry-After``); ``cut_watches`` ends every open watch; ``gone_next_watch`` answers the next watch
with 410 Gone. It reports what is left of a burst (``fail_count``), not how many fired: a burst's
fired faults are what it was given less what was left when the next one replaced it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.fake_arm import FakeArm


def cluster_url(kubeconfig: Path) -> str:
    """The API server URL of a kubeconfig the development cluster wrote (JSON)."""
    config = json.loads(kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["server"])


@dataclass
class FaultControl:
    """``/_kaiten/faults`` of the cluster at ``url``, with ``fired``: faults that fired by kind
    (``500``, ``429``, ``409``, ``watch-cut``, ``410``)."""

    url: str
    fired: Counter[str] = field(default_factory=Counter)
    configured: Counter[str] = field(default_factory=Counter)
    _burst: tuple[str, int] | None = None  # (kind, count) of the burst in force
    _gone_armed: bool = False

    def _call(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 -- a local http URL
            f"{self.url}/_kaiten/faults",
            data=data,
            method="POST" if body is not None else "GET",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            state: dict[str, Any] = json.loads(response.read())
        return state

    def state(self) -> dict[str, Any]:
        return self._call()

    def _settle(self, state: dict[str, Any]) -> None:
        """Count what fired of the burst and the 410 in force, as ``state`` shows."""
        if self._burst is not None:
            kind, count = self._burst
            self.fired[kind] += count - int(state["fail_count"])
            self._burst = None
        if self._gone_armed and not state["gone_next_watch"]:
            self.fired["410"] += 1
            self._gone_armed = False

    def burst(self, code: int, count: int, *, retry_after: int = 1) -> None:
        """The next ``count`` resource requests answer ``code``."""
        self._settle(self.state())
        self._call({"fail": {"count": count, "code": code, "retry_after": retry_after}})
        self._burst = (str(code), count)
        self.configured[str(code)] += count

    def cut_watches(self, *, gone: bool) -> int:
        """End every open watch; with ``gone``, the next watch (a resumption) answers 410."""
        self._settle(self.state())
        answer = self._call({"cut_watches": True, "gone_next_watch": gone})
        cut = int(answer["cut_watches"])
        self.fired["watch-cut"] += cut
        self.configured["watch-cut"] += 1
        if gone:
            self._gone_armed = True
            self.configured["410"] += 1
        return cut

    def wait_consumed(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until the burst in force and any 410 have fired."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if int(state["fail_count"]) == 0 and not state["gone_next_watch"]:
                return
            time.sleep(0.02)

    def clear(self) -> None:
        """No more failing requests; settle the tally. (The control cannot disarm a 410 once
        armed: one that has not fired yet answers the next watch, and is counted if seen.)"""
        self._settle(self.state())
        self._settle(self._call({"fail": {"count": 0, "code": 500}}))


@dataclass(frozen=True)
class Answer:
    method: str
    path: str
    status: int
    at: float  # time.monotonic() when answered


class RecordingArm(FakeArm):
    """The fake ARM, also recording the status of every answer (``answers``)."""

    def __init__(self, cert_dir: Path, *, poll_steps: int = 2) -> None:
        super().__init__(cert_dir, poll_steps=poll_steps)
        self.answers: list[Answer] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        self.answers.append(Answer(request.method, request.path, response.status, time.monotonic()))
        return response

    def faults(self) -> Counter[str]:
        """Answers that were injected faults, by status."""
        return Counter(str(a.status) for a in self.answers if a.status in (429, 500, 502, 503))

    def puts(self, pool: str) -> list[Answer]:
        """The answers to PUTs of agent pool ``pool``, in order."""
        return [a for a in self.answers if a.method == "PUT" and a.path.endswith(f"/{pool}")]


def fault_table(rows: dict[str, tuple[int, int]]) -> str:
    """A small text table: kind, configured, fired."""
    lines = [f"{'fault':<28} {'configured':>10} {'fired':>6}"]
    lines += [f"{kind:<28} {conf:>10} {fired:>6}" for kind, (conf, fired) in sorted(rows.items())]
    return "\n".join(lines)
