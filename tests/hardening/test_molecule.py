"""The hardening role's Molecule scenario `default`, run as a user would run it."""

from __future__ import annotations

import shutil

import pytest

from tests.support.ansible import molecule_test

pytestmark = [pytest.mark.slow, pytest.mark.molecule]


@pytest.mark.skipif(not shutil.which("podman"), reason="podman is not installed: run `make setup`")
def test_molecule_default_scenario_passes() -> None:
    """create, converge, idempotence (0 changed), verify, destroy on Debian 12 and 13."""
    molecule_test("hardening", ("converge", "idempotence", "verify"))
