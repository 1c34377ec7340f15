from __future__ import annotations

from pathlib import Path

import pytest

from tests.contract.values import Values, resolve_values
from tests.manifests.render import render_all


@pytest.fixture(scope="session")
def values() -> dict[str, Values]:
    """Every inventory's shared values and what each consumer derives from them."""
    return resolve_values()


@pytest.fixture(scope="session")
def rendered() -> dict[str, Path]:
    """The manifests each inventory deploys, rendered by the app_deploy role."""
    return render_all()
