"""The broker client's repeated lines are summarised, not written out: while the broker is away
aiokafka logs every retry (every 100 ms in each loop of each client)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import orjson

from cxkit.logs import ACCESS_LOG, RepeatsSummarised, configure_logging


def _record(name: str, msg: str, args: tuple[object, ...], at: float, level: int = logging.ERROR) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    record.created = at
    return record


def test_each_kind_shows_once_per_window_then_says_how_many_were_held_back() -> None:
    repeats = RepeatsSummarised(window_s=10)
    refused = "Unable connect to node with id %s: %s"
    shown = []
    for i in range(120):  # 12 s of retries every 100 ms
        record = _record("aiokafka", refused, (111, "[Errno 111] Connection refused"), 1000 + i / 10)
        if repeats.filter(record):
            shown.append((record.created, getattr(record, "repeated", 0)))
    assert shown == [(1000.0, 0), (1010.0, 99)]

    # Another template, another logger or another level is another kind, shown at once.
    assert repeats.filter(_record("aiokafka", "Unable to update metadata from %s", ([111],), 1011))
    assert repeats.filter(_record("aiokafka.consumer.fetcher", refused, (111, "x"), 1011))
    assert repeats.filter(_record("aiokafka", refused, (111, "x"), 1011, logging.WARNING))
    # Lines of other loggers are never held back, however often they repeat.
    assert all(repeats.filter(_record("cxkit.kafka.consumer", "consumer round failed", (), 1011)) for _ in range(50))
    # Shown again after its window, with what was held back since it last showed (1010.1-1011.9),
    # and after a quiet window with nothing to report.
    later = _record("aiokafka", refused, (111, "x"), 1100)
    assert repeats.filter(later) and later.repeated == 19
    quiet = _record("aiokafka", refused, (111, "x"), 1200)
    assert repeats.filter(quiet) and not hasattr(quiet, "repeated")


def test_the_service_log_carries_one_line_and_the_count(tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, ACCESS_LOG.enabled)
    stderr = sys.stderr
    with target.open("w") as stream:
        sys.stderr = stream
        try:
            configure_logging("repeats-test", json=True)
            client = logging.getLogger("aiokafka")
            for _ in range(200):
                client.error("Unable connect to node with id %s: %s", 111, "[Errno 111] Connection refused")
            logging.getLogger("cxkit.test").warning("ours")
            for handler in root.handlers:
                handler.flush()
        finally:
            sys.stderr = stderr
            root.handlers[:], level, ACCESS_LOG.enabled = saved
            root.setLevel(level)
    lines = [orjson.loads(line) for line in target.read_text().splitlines()]
    assert [(line["logger"], line["event"]) for line in lines] == [
        ("aiokafka", "Unable connect to node with id 111: [Errno 111] Connection refused"),
        ("cxkit.test", "ours"),
    ]
