"""Structured logs carry the event's context."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from shared.logs import configure_logging


def test_json_lines_carry_bound_workspace_and_correlation(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", service="planner")
    try:
        with structlog.contextvars.bound_contextvars(workspace="default/ws", correlation_id="u/1"):
            structlog.get_logger("t").info("event.handled", outcome="ack")
        logging.getLogger("nats").debug("hidden below INFO")
        line = json.loads(capsys.readouterr().err.strip())
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    assert line["event"] == "event.handled"
    assert line["service"] == "planner"
    assert line["workspace"] == "default/ws"
    assert line["correlation_id"] == "u/1"
    assert line["level"] == "info"
    assert line["timestamp"].endswith("Z")
