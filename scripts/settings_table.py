"""The README's configuration table, generated from the settings classes (`make docs`).

    python scripts/settings_table.py           print the table
    python scripts/settings_table.py --write   rewrite it in README.md between the markers

Every field of CRMSettings and CEMSettings is a row: the environment variable (prefix + field
name upper-cased), its default and the field's description. A subclass that only changes a
default keeps the description its base class gives."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

from cem.config import CEMSettings
from crm.config import CRMSettings

README = Path(__file__).resolve().parents[1] / "README.md"
START = "<!-- settings-table:start -->"
END = "<!-- settings-table:end -->"
SETTINGS: tuple[type[BaseSettings], ...] = (CRMSettings, CEMSettings)


def description_of(cls: type[BaseSettings], name: str) -> str:
    """The nearest description along the class hierarchy."""
    for klass in cls.__mro__:
        fields = getattr(klass, "model_fields", None) or {}
        field = fields.get(name)
        if field is not None and field.description:
            return field.description
    return ""


def format_default(value: Any) -> str:
    """The default as it would be written in the environment."""
    if value is None:
        return "*(unset)*"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple | set | frozenset | dict):
        # pydantic-settings reads complex values from the environment as JSON.
        text = json.dumps(sorted(value) if isinstance(value, set | frozenset) else value)
    else:
        text = str(value)
    return f"`{text}`" if text else '`""`'


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = ["| variable | default | description |", "|---|---|---|"]
    for cls in SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            default = field.get_default(call_default_factory=True)
            lines.append(f"| `{prefix}{name.upper()}` | {cell(format_default(default))} | {cell(description_of(cls, name))} |")
    return "\n".join(lines) + "\n"


def replace_section(readme: str, table: str) -> str:
    """README text with the marked section replaced by `table`."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README.md lacks the markers {START} ... {END}")
    return f"{head}{START}\n{table}{END}{tail}"


def current_section(readme: str) -> str:
    """What the README holds between the markers now."""
    _, _, rest = readme.partition(START)
    section, _, _ = rest.partition(END)
    return section.lstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        sys.stdout.write(table)
        return 0
    text = README.read_text(encoding="utf-8")
    updated = replace_section(text, table)
    if updated != text:
        README.write_text(updated, encoding="utf-8")
        print(f"{README.name}: configuration table updated")
    else:
        print(f"{README.name}: configuration table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
