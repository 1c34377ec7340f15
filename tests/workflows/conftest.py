"""Fixtures for the workflow tests: the parsed workflows."""

from __future__ import annotations

from typing import Any

import pytest

from tests.workflows.gha import WORKFLOWS, load_workflow


@pytest.fixture(scope="session")
def workflows() -> dict[str, dict[str, Any]]:
    return {p.name: load_workflow(p) for p in sorted(WORKFLOWS.glob("*.yml"))}


@pytest.fixture(scope="session")
def ci(workflows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return workflows["ci.yml"]


@pytest.fixture(scope="session")
def cd(workflows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return workflows["cd.yml"]
