"""No secrets in logs: respondent tokens, share-link signatures and key-like query parameters
are redacted in the access line and in every other log line (exceptions quoting URLs too)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cxkit.logs import ACCESS_LOG, configure_logging
from cxkit.redaction import redact_path, redact_query

TOKEN = "Zx3vQ9-kT1mB7wP_aaaaaaaaaaaaaaaaaaaaaaaaaaa"
SIGNATURE = "4b1d2c9e0f7a6b5c4d3e2f1a0b9c8d7e"


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        (f"/r/{TOKEN}", "/r/[redacted]"),
        (f"/r/{TOKEN}/thanks", "/r/[redacted]/thanks"),
        (f"/cem/r/{TOKEN}?lang=de", "/cem/r/[redacted]?lang=de"),
        (
            f"/v1/shared/documents/7?expires=1767225600&signature={SIGNATURE}",
            "/v1/shared/documents/7?expires=[redacted]&signature=[redacted]",
        ),
        ("/v1/x?API_KEY=k1&access_token=t1&Client-Secret=s1&password=p1&limit=5", None),
    ],
)
def test_paths_lose_tokens_and_secret_parameters(raw: str, safe: str | None) -> None:
    redacted = redact_path(raw)
    assert TOKEN not in redacted and SIGNATURE not in redacted
    if safe is not None:
        assert redacted == safe
    else:
        assert redacted == "/v1/x?API_KEY=[redacted]&access_token=[redacted]&Client-Secret=[redacted]&password=[redacted]&limit=5"


def test_ordinary_paths_and_queries_are_left_as_they_are() -> None:
    path = "/v1/customers/3f1c7e7a-7d5e-4b8e-9a51-1f0e2d3c4b5a/view"
    assert redact_path(path) is path  # the fast check: nothing built
    assert redact_query("limit=50&cursor=abc&lifecycle_stage=lead") == "limit=50&cursor=abc&lifecycle_stage=lead"
    assert redact_query("signature=&limit=1") == "signature=&limit=1"


@pytest.fixture
def logs_to(tmp_path: Path) -> Iterator[Path]:
    """configure_logging (JSON) writing to a file, the access line included; restored after."""
    target = tmp_path / "log.jsonl"
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd)
    stderr = sys.stderr
    with target.open("w") as stream:
        sys.stderr = stream
        try:
            configure_logging("redaction-test", json=True)
            ACCESS_LOG.configure("redaction-test", json=True, enabled=True, fd=stream.fileno())
            yield target
        finally:
            sys.stderr = stderr
            root.handlers[:], level = saved[0], saved[1]
            root.setLevel(level)
            ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd = saved[2:]


def test_access_line_and_error_lines_hold_no_token_or_signature(logs_to: Path) -> None:
    ACCESS_LOG.emit("GET", f"/r/{TOKEN}", 200, 0.002, "rid-1", "0" * 32, "192.0.2.1")
    ACCESS_LOG.emit("GET", "/v1/customers/1", 200, 0.002, "rid-2", "0" * 32, "192.0.2.1")
    log = logging.getLogger("cxkit.test")
    try:
        raise RuntimeError(f"GET https://crm.example/v1/shared/documents/7?expires=1&signature={SIGNATURE} failed")
    except RuntimeError:
        log.exception("download of %s failed", f"/r/{TOKEN}", extra={"url": f"https://hooks.example/in?token={TOKEN}"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = logs_to.read_text()
    assert TOKEN not in text and SIGNATURE not in text
    lines = [orjson.loads(line) for line in text.splitlines()]
    assert [line["path"] for line in lines if line.get("logger") == "access"] == ["/r/[redacted]", "/v1/customers/1"]
    error = next(line for line in lines if line.get("logger") == "cxkit.test")
    assert error["event"] == "download of /r/[redacted] failed"
    assert error["url"] == "https://hooks.example/in?token=[redacted]"
    assert "signature=[redacted]" in error["exception"] and "RuntimeError" in error["exception"]
