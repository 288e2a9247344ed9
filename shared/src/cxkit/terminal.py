"""Text from outside (a request's path, an event, a dead letter's reason, a file's cells) written
to an operator's terminal: a readable log line, a command's table. A terminal acts on some
characters instead of showing them (C0 and C1 controls, DEL: an escape sequence may clear the
screen, retitle the window or set the clipboard), and the bidirectional overrides and isolates
reorder the text around them; each is written as its escape (`\\x1b`, `\\u202e`) instead."""

from __future__ import annotations

import re

_UNSHOWABLE = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u200e\\u200f\\u202a-\\u202e\\u2066-\\u2069]")


def visible(value: str) -> str:
    """`value` with every character a terminal would act on written as its escape."""
    if value.isprintable():  # the usual case, without the regex (every character above is unprintable)
        return value
    return _UNSHOWABLE.sub(lambda m: ascii(m[0])[1:-1], value)
