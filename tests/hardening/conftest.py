"""Paths and environment for running the hardening role the way `make test` does."""

from __future__ import annotations

import pytest

from tests.support.ansible import ROLES, ROOT
from tests.support.ansible import ansible_env as make_ansible_env

ROLE = ROLES / "hardening"
__all__ = ["ROLE", "ROOT"]


@pytest.fixture(scope="session")
def ansible_env() -> dict[str, str]:
    return make_ansible_env()
