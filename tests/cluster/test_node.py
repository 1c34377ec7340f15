"""A real node: containerd and the kubelet from the control plane's Go module run pods.

One node container joins a control plane that listens on the node network's gateway.
The in-process scheduler places a Deployment's pod on it; the pod runs from an image
imported into containerd and referenced by digest, under Pod Security `restricted`,
and answers HTTP on its pod address.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.cluster.kube import (
    RESTRICTED_SECURITY_CONTEXT,
    connections_from_pod,
    new_namespace,
    wait_for,
)
from tests.support.controlplane import ROOT, ControlPlane, build_binary, lab_ranges
from tests.support.node import (
    CLUSTER_DOMAIN,
    Network,
    Node,
    build_coredns,
    build_pause,
    deploy_cluster_dns,
    read_sysctls,
)
from tests.support.oci import name_by_digest

pytestmark = [pytest.mark.slow, pytest.mark.controlplane]

GO_MOD = ROOT / "tests" / "controlplane" / "go.mod"
WEB_BASE_IMAGE = "localhost/webapp-python:3.11-bookworm"


def module_version(module: str) -> str:
    match = re.search(rf"^\s*{re.escape(module)} (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert match, f"{module} is not required by {GO_MOD}"
    return match.group(1)


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Node]]:
    build_binary()
    images = tmp_path_factory.mktemp("images")
    subprocess.run(
        ["bash", str(ROOT / "scripts/build-base-image.sh"), WEB_BASE_IMAGE],
        check=True,
        capture_output=True,
    )
    web = images / "web.tar"
    subprocess.run(
        ["podman", "save", "--quiet", "--format", "oci-archive", "-o", str(web), WEB_BASE_IMAGE],
        check=True,
    )
    name_by_digest(web)
    network = Network("k3s-ec2-nodetest", "10.89.90.0/24").create()
    node = Node("k3s-ec2-nodetest-1", network.address(0))
    controlplane: ControlPlane | None = None
    try:
        node.create(network.name)
        controlplane = ControlPlane(bind_address=network.gateway).start()
        node.join(controlplane, [build_pause(images), build_coredns(images), web])
        deploy_cluster_dns(controlplane, node)
        yield controlplane, node
    finally:
        node.destroy()
        if controlplane is not None:
            controlplane.destroy()
        network.remove()


@pytest.fixture(scope="module")
def api(node_cluster: tuple[ControlPlane, Node]) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(node_cluster[0].kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="module")
def web(api: client.ApiClient, node_cluster: tuple[ControlPlane, Node]) -> tuple[str, str]:
    """A one-replica Deployment serving HTTP on 8080, image by digest; (namespace, image)."""
    node = node_cluster[1]
    image = f"{WEB_BASE_IMAGE.rsplit(':', 1)[0]}@{node.image_digest(WEB_BASE_IMAGE)}"
    namespace = new_namespace(api, "node")
    labels = {"app": "web"}
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "terminationGracePeriodSeconds": 5,
                        "containers": [
                            {
                                "name": "web",
                                "image": image,
                                "command": [
                                    "python3",
                                    "-m",
                                    "http.server",
                                    "8080",
                                    "--directory",
                                    "/etc",
                                ],
                                "ports": [{"containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/hostname", "port": 8080},
                                    "periodSeconds": 1,
                                },
                                "securityContext": {
                                    **RESTRICTED_SECURITY_CONTEXT,
                                    "readOnlyRootFilesystem": True,
                                },
                            }
                        ],
                    },
                },
            },
        },
    )
    return namespace, image


def ready_pods(api: client.ApiClient, namespace: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app=web").items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def fetch_from_node(node: Node, url: str) -> str:
    """GET `url` from inside the node (pod addresses are routed there)."""
    return node.exec(
        "python3",
        "-c",
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())",
    )


def test_node_registers_ready_with_the_versions_of_the_module(
    api: client.ApiClient, node_cluster: tuple[ControlPlane, Node]
) -> None:
    node = client.CoreV1Api(api).read_node(node_cluster[1].name)
    assert node.status.node_info.kubelet_version == module_version("k8s.io/kubernetes")
    assert node.status.node_info.container_runtime_version == "containerd://" + module_version(
        "github.com/containerd/containerd/v2"
    ).lstrip("v")
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == [
        node_cluster[1].address
    ]
    cluster_cidr, _ = lab_ranges()
    assert ipaddress.ip_network(node.spec.pod_cidr).subnet_of(ipaddress.ip_network(cluster_cidr))


def test_a_restricted_pod_by_digest_runs_and_serves_on_its_address(
    api: client.ApiClient, node_cluster: tuple[ControlPlane, Node], web: tuple[str, str]
) -> None:
    namespace, image = web
    pods = wait_for(lambda: ready_pods(api, namespace), "the web pod to become Ready", timeout=120)
    pod = pods[0]
    assert pod.spec.node_name == node_cluster[1].name
    assert pod.status.container_statuses[0].image_id.endswith(image.rsplit("@", 1)[1])
    assert (
        fetch_from_node(node_cluster[1], f"http://{pod.status.pod_ip}:8080/hostname").strip()
        == pod.metadata.name
    )
    # The API server reaches the kubelet for logs, with its own client certificate.
    logs = client.CoreV1Api(api).read_namespaced_pod_log(pod.metadata.name, namespace)
    assert "GET /hostname" in logs


def test_a_deleted_pod_is_replaced(api: client.ApiClient, web: tuple[str, str]) -> None:
    namespace, _ = web
    first = wait_for(
        lambda: ready_pods(api, namespace), "the web pod to become Ready", timeout=120
    )[0]
    client.CoreV1Api(api).delete_namespaced_pod(first.metadata.name, namespace)
    replacement = wait_for(
        lambda: [p for p in ready_pods(api, namespace) if p.metadata.name != first.metadata.name],
        "a replacement pod to become Ready",
        timeout=120,
    )[0]
    assert replacement.status.pod_ip


def test_the_kubelet_api_refuses_a_caller_without_a_cluster_certificate(
    node_cluster: tuple[ControlPlane, Node],
) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = (
        False,
        ssl.CERT_NONE,
    )  # the kubelet's serving cert is self-signed
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(
            f"https://{node_cluster[1].address}:10250/pods", context=context, timeout=5
        )
    assert refused.value.code == 401


def test_the_hosts_kernel_values_are_put_back(node_cluster: tuple[ControlPlane, Node]) -> None:
    assert read_sysctls() == node_cluster[1].host_sysctls


def test_the_machines_full_disk_neither_evicts_pods_nor_deletes_imported_images(
    node_cluster: tuple[ControlPlane, Node],
) -> None:
    """The node's disk is the lab machine's, shared with all else on it: the running kubelet
    (its configuration read back from its own API) evicts for memory only and never collects
    images, which no registry here could give back. Over 85 % full, a kubelet with the
    defaults evicted every pod in a loop (reproduced with a 6 GB file on this machine)."""
    controlplane, node = node_cluster
    configz = subprocess.run(
        [
            "kubectl",
            f"--kubeconfig={controlplane.kubeconfig}",
            "get",
            "--raw",
            f"/api/v1/nodes/{node.name}/proxy/configz",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    kubelet = json.loads(configz)["kubeletconfig"]
    assert kubelet["evictionHard"] == {
        "memory.available": "100Mi",
        "nodefs.available": "0%",
        "nodefs.inodesFree": "0%",
        "imagefs.available": "0%",
    }
    assert kubelet["imageGCHighThresholdPercent"] == 100


def test_a_nodeport_service_answers_on_the_nodes_address(
    api: client.ApiClient, node_cluster: tuple[ControlPlane, Node], web: tuple[str, str]
) -> None:
    """kube-proxy on the node routes the NodePort to the pod, reached from this machine."""
    namespace, _ = web
    service = client.CoreV1Api(api).create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "targetPort": 8080}],
            },
        },
    )
    url = f"http://{node_cluster[1].address}:{service.spec.ports[0].node_port}/hostname"

    def answer() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.read().decode().strip()
        except OSError:
            return None

    names = {
        pod.metadata.name for pod in wait_for(lambda: ready_pods(api, namespace), "a Ready pod")
    }
    assert wait_for(answer, f"the NodePort {url} to answer", timeout=60) in names


def test_pods_resolve_services_by_name_through_the_cluster_dns(
    api: client.ApiClient, web: tuple[str, str]
) -> None:
    """A pod's resolver is the kube-dns Service (CoreDNS): Service names resolve and the
    API server answers there; a name no Service has does not resolve."""
    namespace, image = web
    api_server = f"kubernetes.default.svc.{CLUSTER_DOMAIN}:443"
    nowhere = f"nowhere.default.svc.{CLUSTER_DOMAIN}:443"
    prober = {"image": image, "securityContext": RESTRICTED_SECURITY_CONTEXT}
    assert connections_from_pod(api, namespace, {}, prober, [api_server, nowhere]) == {
        api_server: "opened",
        nowhere: "unresolved",
    }


def test_network_policies_are_enforced(
    api: client.ApiClient, node_cluster: tuple[ControlPlane, Node], web: tuple[str, str]
) -> None:
    """Once a NetworkPolicy admits only `role: client` pods to the web pods, a client pod
    connects and any other pod's connection is dropped on the node."""
    namespace, image = web
    pod = wait_for(lambda: ready_pods(api, namespace), "a Ready web pod")[0]
    target = f"{pod.status.pod_ip}:8080"
    prober = {"image": image, "securityContext": RESTRICTED_SECURITY_CONTEXT}
    # Before any policy selects the web pods, anyone connects.
    assert connections_from_pod(api, namespace, {"role": "other"}, prober, [target]) == {
        target: "opened"
    }
    networking = client.NetworkingV1Api(api)
    networking.create_namespaced_network_policy(
        namespace,
        {
            "metadata": {"name": "web-from-clients"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                        "ports": [{"port": 8080, "protocol": "TCP"}],
                    }
                ],
            },
        },
    )
    try:
        assert connections_from_pod(api, namespace, {"role": "client"}, prober, [target]) == {
            target: "opened"
        }
        assert connections_from_pod(api, namespace, {"role": "other"}, prober, [target]) == {
            target: "blocked"
        }
    finally:
        networking.delete_namespaced_network_policy("web-from-clients", namespace)
