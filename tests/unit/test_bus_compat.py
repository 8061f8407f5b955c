"""faststream 0.7 x nats-py 2.16: a fetch that times out with the builtin ``TimeoutError`` (as
nats-py's ``_fetch_n`` raises it) must not end the pull loop (``shared.bus`` widens what the loop
suppresses)."""

from __future__ import annotations

import contextlib

import nats.errors
from faststream.nats.subscriber.usecases import stream_pull_subscriber

import shared.bus  # noqa: F401 -- importing it applies the widening


def test_both_kinds_of_fetch_timeout_are_suppressed_by_the_pull_loop() -> None:
    suppressed = stream_pull_subscriber.TimeoutError  # type: ignore[attr-defined]
    for error in (TimeoutError(), nats.errors.TimeoutError()):
        with contextlib.suppress(suppressed):
            raise error
