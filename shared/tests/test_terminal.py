"""Text from outside reaches an operator's terminal shown, never acted on (cxkit.terminal)."""

from __future__ import annotations

from pathlib import Path

from cxkit.logs import ACCESS_LOG
from cxkit.terminal import visible


def test_what_a_terminal_would_act_on_is_written_as_its_escape() -> None:
    sent = "a\x1b]52;c;SGk=\x07b\x1b[2J\x9b31m\u202ed\x00\x7f"
    assert visible(sent) == "a\\x1b]52;c;SGk=\\x07b\\x1b[2J\\x9b31m\\u202ed\\x00\\x7f"
    plain = "/v1/customers/3f1c7e7a?q=Zoë 中 ü"
    assert visible(plain) is plain  # the usual case: nothing built
    assert visible("tab\tand\nnewline") == "tab\\tand\\nnewline"
    assert visible("no-break\xa0space") == "no-break\xa0space"  # not printable, but shown as it is


def test_the_readable_access_line_shows_the_path_a_client_sent(tmp_path: Path) -> None:
    """The dev stack's access line (`LOG_JSON=false`, what `make run` prints): a path percent-
    decoded to escape sequences cleared the screen or set the clipboard of whoever watched it."""
    target = tmp_path / "access.log"
    saved = (ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd)
    with target.open("w") as stream:
        try:
            ACCESS_LOG.configure("terminal-test", json=False, enabled=True, fd=stream.fileno())
            ACCESS_LOG.emit("GET", "/v1/customers/\x1b[2J\x1b]52;c;SGk=\x07x", 401, 0.001, "rid\x9b2J", None, "192.0.2.1")
        finally:
            ACCESS_LOG.service, ACCESS_LOG.json, ACCESS_LOG.enabled, ACCESS_LOG.fd = saved
    line = target.read_text()
    assert "GET /v1/customers/\\x1b[2J\\x1b]52;c;SGk=\\x07x 401" in line and "request_id=rid\\x9b2J" in line, line
    assert not any(c in line for c in "\x1b\x07\x9b")
