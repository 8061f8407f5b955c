"""Kaiten's error types. The exception class decides what happens to an event (see shared.bus):
a ``PermanentError`` becomes a condition and the event is acknowledged; a ``TransientError`` is
retried with backoff; any other exception is treated as transient and logged with its traceback.
"""

from __future__ import annotations


class KaitenError(Exception):
    """Base of every error Kaiten raises on purpose."""


class ConfigError(KaitenError):
    """Settings or environment cannot work (raised at start-up, before any event is taken)."""


class PermanentError(KaitenError):
    """Retrying cannot help: bad input, quota exceeded, an unknown SKU.

    ``reason`` is a CamelCase condition reason. When ``condition`` is set, the bus reports that
    condition as False with this reason and message on the workspace the event is about.
    """

    def __init__(self, reason: str, message: str, *, condition: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.condition = condition


class TransientError(KaitenError):
    """Retrying later may help: timeouts, 429, 5xx, conflicts. ``delay`` (seconds) overrides
    the bus's backoff, for example with a server's Retry-After."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class EventDecodeError(PermanentError):
    """A message on the bus is not a valid Kaiten event; it is dead-lettered at once."""

    def __init__(self, message: str) -> None:
        super().__init__("InvalidEvent", message)
