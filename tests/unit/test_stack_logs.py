"""`kaiten logs`: the services' JSON lines made readable, other logs kept, several logs
interleaved by time, and the reader that --follow calls again and again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from localdev.logs import Entry, LogReader, interleave, line_time, output_lines, render

STAMP = "2026-11-22T03:38:51.094458Z"


def record(**fields: Any) -> str:
    """A line as a service writes it (shared.logs, JSON): its fields, then event, service, level
    and timestamp (``fields`` may replace those too)."""
    head = {"event": "webhook.serving", "service": "watcher", "level": "info", "timestamp": STAMP}
    replaced = {key: fields.pop(key) for key in list(fields) if key in head}
    return json.dumps({**fields, **head, **replaced})


def test_a_service_line_reads_time_level_service_event_then_its_fields() -> None:
    line = record(url="https://127.0.0.1:9443/validate", registered=True, pending=None)
    assert render(line) == [
        "2026-11-22 03:38:51.094 INFO  watcher     webhook.serving "
        "url=https://127.0.0.1:9443/validate registered=true"
    ]


def test_field_values_are_quoted_only_when_they_need_it() -> None:
    line = record(
        event="resources.assessed",
        service="provisioner",
        level="warning",
        workspace="default/ws",
        message="0/2 nodes are available",
        nodes=["a", "b"],
        count=2,
        ratio=0.5,
        empty="",
    )
    (text,) = render(line)
    assert text == (
        "2026-11-22 03:38:51.094 WARNING provisioner resources.assessed workspace=default/ws "
        'message="0/2 nodes are available" nodes=["a","b"] count=2 ratio=0.5 empty=""'
    )


def test_an_exception_follows_its_line_indented() -> None:
    line = record(
        event="service.config_error",
        level="error",
        exception='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad',
    )
    assert render(line) == [
        "2026-11-22 03:38:51.094 ERROR watcher     service.config_error",
        "    Traceback (most recent call last):",
        '      File "x.py", line 1',
        "    ValueError: bad",
    ]


def test_a_time_with_an_offset_is_shown_in_utc() -> None:
    line = record(timestamp="2026-11-22T05:38:51.5+02:00")
    assert render(line)[0].startswith("2026-11-22 03:38:51.500 INFO ")


def test_other_lines_are_kept_without_terminal_colours() -> None:
    coloured = "2026-11-22 03:38:51,784 \x1b[31mERROR\x1b[0m    - Task-24 raised an exception"
    assert render(coloured) == ["2026-11-22 03:38:51,784 ERROR    - Task-24 raised an exception"]
    for kept in ('{"no": "event key"}', "{not json", "", "    raise asyncio.TimeoutError"):
        assert render(kept) == [kept]


def test_interleaved_lines_carry_their_source_and_drop_the_repeated_service() -> None:
    line = record()
    assert render(line, source="watcher") == [
        "watcher     | 2026-11-22 03:38:51.094 INFO  webhook.serving"
    ]
    # A line whose service is not the file's (the stack's own start line in cluster.log says
    # "cluster", but any other) keeps its service column.
    assert render(line, source="cluster") == [
        "cluster     | 2026-11-22 03:38:51.094 INFO  watcher     webhook.serving"
    ]
    assert render("[7] 2026/11/22 03:38:51.094458 [INF] Server is ready", source="nats-server") == [
        "nats-server | [7] 2026/11/22 03:38:51.094458 [INF] Server is ready"
    ]


def test_raw_output_is_the_stored_line() -> None:
    line = record(registered=True)
    entries = [Entry("watcher", None, line)]
    assert output_lines(entries, raw=True, prefixed=False) == [line]
    assert output_lines(entries, raw=True, prefixed=True) == [f"watcher     | {line}"]
    assert output_lines(entries, raw=False, prefixed=False) == render(line)


def test_times_are_read_from_every_kind_of_log() -> None:
    plus2 = timezone(timedelta(hours=2))
    assert line_time(record()) == datetime(2026, 11, 22, 3, 38, 51, 94458, tzinfo=UTC)
    # nats-server and Python's logging write the machine's local time.
    nats = "[14865] 2026/11/22 03:44:50.772077 [INF] Server is ready"
    assert line_time(nats, plus2) == datetime(2026, 11, 22, 1, 44, 50, 772077, tzinfo=UTC)
    logging_line = "2026-11-22 03:38:51,784 \x1b[32mINFO\x1b[0m callback for Task-11"
    assert line_time(logging_line, UTC) == datetime(2026, 11, 22, 3, 38, 51, 784000, tzinfo=UTC)
    # PostgreSQL says its zone.
    postgres = "2026-11-22 03:44:50.885 UTC [14875] LOG:  listening on Unix socket"
    assert line_time(postgres, plus2) == datetime(2026, 11, 22, 3, 44, 50, 885000, tzinfo=UTC)
    for timeless in ("Traceback (most recent call last):", "development cluster at http://x", ""):
        assert line_time(timeless) is None
    assert line_time(record(timestamp="yesterday")) is None


def test_interleaving_orders_by_time_and_keeps_a_records_lines_together() -> None:
    t = [datetime(2026, 11, 22, 3, 0, s, tzinfo=UTC) for s in range(4)]
    watcher = [
        Entry("watcher", t[0], "w0"),
        Entry("watcher", t[2], "w2"),
        Entry("watcher", t[2], "w2 traceback"),
        Entry("watcher", t[2], "w2 traceback end"),
    ]
    planner = [
        Entry("planner", t[1], "p1"),
        Entry("planner", t[2], "p2"),
        Entry("planner", t[3], "p3"),
    ]
    cluster = [Entry("cluster", None, "development cluster at ...")]
    merged = [e.line for e in interleave([*watcher, *planner, *cluster])]
    assert merged == [
        "development cluster at ...",
        "w0",
        "p1",
        "w2",
        "w2 traceback",
        "w2 traceback end",
        "p2",
        "p3",
    ]


def test_the_reader_returns_whole_lines_once_and_then_only_what_is_new(tmp_path: Path) -> None:
    watcher, planner = tmp_path / "watcher.log", tmp_path / "planner.log"
    watcher.write_text(record(timestamp="2026-11-22T03:00:02Z") + '\nTraceback\n  more\n{"par')
    reader = LogReader({"watcher": watcher, "planner": planner}, local=UTC)

    first = reader.read()
    assert [e.line for e in first][1:] == ["Traceback", "  more"]
    assert {e.time for e in first} == {datetime(2026, 11, 22, 3, 0, 2, tzinfo=UTC)}
    assert reader.read() == []  # the partial line waits for its end

    with watcher.open("a") as f:
        f.write('tial": 1}\n')
    planner.write_text(record(service="planner", timestamp="2026-11-22T03:00:01Z") + "\n")
    second = reader.read()
    assert [(e.source, e.line) for e in second] == [
        ("planner", record(service="planner", timestamp="2026-11-22T03:00:01Z")),
        ("watcher", '{"partial": 1}'),
    ]
    # A line without a time keeps the time of the line before it, across reads.
    assert second[1].time == datetime(2026, 11, 22, 3, 0, 2, tzinfo=UTC)

    watcher.write_text("after truncation\n")
    assert [e.line for e in reader.read()] == ["after truncation"]
