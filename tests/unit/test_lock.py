"""requirements.lock agrees with pyproject.toml, and this environment is what it pins."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from lock import dependencies_hash

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
REFRESH = "run `python3 scripts/lock.py` and commit requirements.lock"


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.]+)", line)
        assert match, f"requirements.lock: not an exact pin: {line!r}"
        found[canonicalize_name(match.group(1))] = match.group(2)
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(extra)
    return [r for r in map(Requirement, specs) if canonicalize_name(r.name) != "llmgate"]


def test_lock_was_made_from_this_pyproject():
    header = re.search(r"pyproject-dependencies-sha256: ([0-9a-f]{64})", LOCK.read_text())
    assert header, "requirements.lock has no pyproject hash"
    assert header.group(1) == dependencies_hash(), f"pyproject.toml changed: {REFRESH}"


def test_every_declared_dependency_is_pinned_inside_its_range():
    locked = pins()
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in requirements.lock: {REFRESH}"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {name}=={locked[name]}, outside {requirement}: {REFRESH}"
        )


def test_this_environment_has_exactly_the_locked_versions():
    """The README's commands and .ci/run install through the lock: what runs is what CI ran."""
    wrong = []
    for name, version in pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (locked {version})")
            continue
        if installed.split("+", 1)[0] != version:
            wrong.append(f"{name} {installed} (locked {version})")
    assert not wrong, "installed without requirements.lock? " + "; ".join(wrong)
