"""README.md stays true to the code: its configuration table is the one
scripts/settings_table.py generates from the settings classes, and it starts with the two
commands a newcomer needs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def settings_table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_table_matches_the_settings_classes() -> None:
    script = settings_table()
    readme = README.read_text(encoding="utf-8")
    assert script.START in readme and script.END in readme, "README.md lost its settings-table markers"
    assert script.current_section(readme) == script.render(), (
        "The configuration table in README.md is out of date: run `make docs` and commit README.md"
    )


def test_settings_table_lists_every_setting_of_both_services() -> None:
    script = settings_table()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \|", script.render(), re.M)
    expected = [f"{cls.model_config['env_prefix']}{name.upper()}" for cls in script.SETTINGS for name in cls.model_fields]
    assert rows == expected
    assert any(row.startswith("CRM_") for row in rows) and any(row.startswith("CEM_") for row in rows)


def test_readme_starts_with_make_run_and_make_test() -> None:
    readme = README.read_text(encoding="utf-8")
    first_block = re.search(r"```[a-z]*\n(.*?)```", readme, re.S)
    assert first_block is not None
    assert readme.index("```") < readme.index("\n## "), "the two commands must come before any section"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
