"""The arrows between the layers go one way (docs/ARCHITECTURE.md), read from the imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "activities", "api", "automation_starts", "bench", "cli", "dependencies", "domain",
    "integrations", "links",
    "payload_codec", "service", "settings", "starter", "store", "temporal_client", "tests",
    "worker", "workflows",
}  # fmt: skip
MAY_NOT_IMPORT = {
    "domain": OURS - {"domain"},
    "store": {"automation_starts", "workflows", "activities", "integrations", "api", "starter", "service", "worker",
              "dependencies", "settings", "cli", "links", "temporal_client"},
    "integrations": {"automation_starts", "workflows", "activities", "store", "api", "starter", "service", "worker",
                     "dependencies", "settings", "cli", "links", "temporal_client"},
    "activities": {"automation_starts", "workflows", "api", "starter", "service", "worker", "dependencies", "cli",
                   "temporal_client"},
    "workflows": {"automation_starts", "integrations", "store", "api", "starter", "service", "worker",
                  "dependencies", "settings", "cli", "links", "temporal_client", "payload_codec"},
    "api": {"starter", "service", "worker", "cli"},
    "starter": {"api", "service", "worker", "cli"},
    "automation_starts": {"api", "starter", "service", "worker", "cli", "dependencies"},
}  # fmt: skip


def imported(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _modules(layer: str) -> list[Path]:
    """A package's modules, or the one top-level module of that name."""
    single = ROOT / f"{layer}.py"
    return [single] if single.exists() else list((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(MAY_NOT_IMPORT))
def test_no_arrow_runs_back_up(layer: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported(path) & MAY_NOT_IMPORT[layer])
        for path in sorted(_modules(layer))
        if "migrations" not in path.parts
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_nothing_but_the_service_imports_both_api_and_starter() -> None:
    both = [
        str(path.relative_to(ROOT))
        for path in ROOT.glob("*.py")
        if {"api", "starter"} <= imported(path)
    ]
    assert both == ["service.py"]
