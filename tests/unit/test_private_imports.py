"""No distribution imports another distribution's private modules or names (issue 20).

A module of one workspace member (or of ``bench/``) may import from another member only
what that member makes public: no path segment and no imported name that starts with an
underscore. Within one member, private modules are its own business. The members and
their packages are read from the workspace's pyproject files, so a new member is covered
without editing this test.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _members() -> dict[str, Path]:
    """Top-level package name under ``agentwatch`` (e.g. ``producer``) -> member dir."""
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages: dict[str, Path] = {}
    for member in workspace["tool"]["uv"]["workspace"]["members"]:
        src = ROOT / member / "src" / "agentwatch"
        for package in src.iterdir():
            if package.is_dir() and (package / "__init__.py").exists():
                packages[package.name] = ROOT / member
    return packages


def _owner(module: str, packages: dict[str, Path]) -> Path | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "agentwatch":
        return None
    return packages.get(parts[1])


def _private_imports(path: Path, home: Path | None,
                     packages: dict[str, Path]) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [(node.module, [alias.name for alias in node.names])]
        elif isinstance(node, ast.Import):
            targets = [(alias.name, []) for alias in node.names]
        else:
            continue
        for module, names in targets:
            owner = _owner(module, packages)
            if owner is None or owner == home:
                continue
            private = [seg for seg in module.split(".") if seg.startswith("_")]
            private += [name for name in names if name.startswith("_")]
            if private:
                line = ast.get_source_segment(path.read_text(), node) or module
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {line.splitlines()[0]}")
    return found


def test_no_distribution_imports_another_distributions_private_modules() -> None:
    packages = _members()
    assert {"schemas", "producer", "processors", "sinks", "alerts", "cli"} <= set(packages)
    offences = []
    for member in sorted(set(packages.values())):
        for path in sorted((member / "src").rglob("*.py")):
            offences += _private_imports(path, member, packages)
    for path in sorted((ROOT / "bench").rglob("*.py")):
        offences += _private_imports(path, None, packages)
    assert not offences, "private imports across distributions:\n" + "\n".join(offences)


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The walker itself: a cross-member private import is found, a same-member one is not."""
    packages = _members()
    sample = ROOT / "cli" / "src" / "agentwatch" / "cli" / "__init__.py"
    probe = tmp_path / "probe.py"
    probe.write_text("from agentwatch.schemas._codec import decode_record\n"
                     "from agentwatch.cli._app import app\n"
                     "from agentwatch.schemas import _hidden\n")
    found = _private_imports_at(probe, packages[sample.parent.name], packages)
    assert [f.split(": ", 1)[1] for f in found] == [
        "from agentwatch.schemas._codec import decode_record",
        "from agentwatch.schemas import _hidden",
    ]


def _private_imports_at(path: Path, home: Path, packages: dict[str, Path]) -> list[str]:
    """As :func:`_private_imports` for a file outside the tree (paths shown as given)."""
    global ROOT  # noqa: PLW0603 - relative_to() needs a parent of the probe
    saved, ROOT = ROOT, path.parent
    try:
        return _private_imports(path, home, packages)
    finally:
        ROOT = saved
