"""The e2e tier: the whole stack as processes (``tests/support/stack.py``). A failed test's
report carries the tail of every log of the stack it used."""

from __future__ import annotations

from collections.abc import Generator

import pytest

from tests.support.stack import Stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, Stack):
                report.sections.append((f"kaiten logs of {value.home}", value.logs()))
    return report
