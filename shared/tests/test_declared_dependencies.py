"""The kit's pyproject declares every distribution the kit imports: at run time in
`dependencies`, and what only the test support imports (cxkit.testing, cxkit.dev_broker,
cxkit.dev_postgres, cxkit.webhooks.testing) in the `testing` extra."""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import tomllib
from importlib.metadata import distributions
from pathlib import Path

from packaging.requirements import Requirement

KIT = Path(__file__).resolve().parents[1]
SOURCE = KIT / "src" / "cxkit"
TEST_SUPPORT = {"testing.py", "dev_broker.py", "dev_postgres.py", "webhooks/testing.py"}


def _imported_distributions(files: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from opentelemetry import trace` takes a module: its own distribution counts
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] not in sys.stdlib_module_names | {"cxkit"}:
                    found.add(_distribution_of(name))
    return found


@functools.cache
def _files_by_distribution() -> dict[Path, str]:
    return {
        Path(dist.locate_file(file)).resolve(): _normal(dist.metadata["Name"])
        for dist in distributions()
        for file in dist.files or []
        if file.suffix in (".py", ".so")
    }


def _distribution_of(module: str) -> str:
    """The distribution whose files hold `module` (or the nearest package above it): namespace
    packages such as `opentelemetry` are spread over many distributions."""
    parts = module.split(".")
    while parts:
        try:
            spec = importlib.util.find_spec(".".join(parts))
        except ImportError:  # a name inside a module, not a module
            spec = None
        if spec is not None and spec.origin not in (None, "namespace"):
            owner = _files_by_distribution().get(Path(spec.origin).resolve())
            if owner is not None:
                return owner
        parts.pop()
    return _normal(module.split(".")[0])


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((KIT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = {_normal(Requirement(r).name) for r in project["dependencies"]}
    testing = {_normal(Requirement(r).name) for r in project["optional-dependencies"]["testing"]}
    return runtime, testing


def test_what_the_kit_imports_at_run_time_is_a_dependency() -> None:
    files = [p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).as_posix() not in TEST_SUPPORT]
    runtime, _ = _declared()
    assert _imported_distributions(files) - runtime == set()


def test_what_only_the_test_support_imports_is_in_the_testing_extra() -> None:
    files = [SOURCE / name for name in TEST_SUPPORT]
    runtime, testing = _declared()
    assert _imported_distributions(files) - runtime - testing == set()
