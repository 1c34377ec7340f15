"""Fixtures for the suites that talk to the Go-built control plane."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.support.controlplane import ControlPlane


@pytest.fixture(scope="session")
def api(controlplane: ControlPlane) -> Iterator[client.ApiClient]:
    """A Python kubernetes client built from the control plane's kubeconfig only."""
    api_client = config.new_client_from_config(config_file=str(controlplane.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()
