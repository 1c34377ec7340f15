from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifests.render import render_all


@pytest.fixture(scope="session")
def rendered() -> dict[str, Path]:
    """Rendered manifests and policies per inventory: {'local': dir, 'dev': dir, 'prod': dir}."""
    return render_all()
