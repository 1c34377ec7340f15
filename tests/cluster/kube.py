"""Small helpers over the Python kubernetes client for the control plane suites."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")

RESTRICTED_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def new_namespace(api: client.ApiClient, prefix: str, labels: dict[str, str] | None = None) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    body = {"metadata": {"name": name, "labels": labels or {}}}
    core = client.CoreV1Api(api)
    core.create_namespace(body)
    # Pod admission needs the namespace's default ServiceAccount, which the
    # controller manager creates a moment later.
    wait_for(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
        f"the default ServiceAccount of namespace {name}",
    )
    return name


# Opens a TCP connection to each host:port given; prints, as JSON, for each whether it
# "opened", was "refused" (the peer answered: nothing dropped it), was "blocked" (no
# answer: dropped on the way) or its name was "unresolved".
CONNECT_PROBE = """
import json, socket, sys, time
time.sleep(1)  # the node's policy controller learns the new pod's address
seen = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        address = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except OSError:
        seen[target] = "unresolved"
        continue
    try:
        socket.create_connection(address, timeout=3).close()
        seen[target] = "opened"
    except ConnectionRefusedError:
        seen[target] = "refused"
    except TimeoutError:
        seen[target] = "blocked"
    except OSError:
        seen[target] = "unreachable"
print(json.dumps(seen))
"""


def connections_from_pod(
    api: client.ApiClient,
    namespace: str,
    labels: dict[str, str],
    container_spec: dict[str, object],
    targets: list[str],
) -> dict[str, str]:
    """Run a pod with `labels` (its container: `container_spec` with a python3 image) that
    connects to each host:port of `targets`: "opened", "refused", "blocked" or "unresolved"."""
    core = client.CoreV1Api(api)
    name = f"connect-probe-{uuid.uuid4().hex[:6]}"
    probe = {**container_spec, "name": "probe", "command": ["python3", "-c", CONNECT_PROBE]}
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [{**probe, "args": targets}],
            },
        },
    )
    try:
        wait_for(
            lambda: core.read_namespaced_pod(name, namespace).status.phase == "Succeeded",
            f"probe pod {name} to finish",
            timeout=120,
        )
        return dict(json.loads(core.read_namespaced_pod_log(name, namespace).splitlines()[-1]))
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def container(name: str = "app", **extra: object) -> dict[str, object]:
    """A container that satisfies Pod Security `restricted` unless `extra` says otherwise."""
    spec: dict[str, object] = {
        "name": name,
        "image": "registry.example/app:1.0",
        "securityContext": dict(RESTRICTED_SECURITY_CONTEXT),
    }
    spec.update(extra)
    return spec


def api_error(call: Callable[[], object]) -> ApiException:
    """Run `call`, which must be refused; return the refusal."""
    try:
        call()
    except ApiException as exc:
        return exc
    raise AssertionError("the API server accepted a request it should refuse")


def error_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message", exc.body))
    except ValueError:
        return str(exc.body)
