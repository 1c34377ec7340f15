"""A Kubernetes node in a podman container, built from the control plane's binary.

The container is a systemd host (the lab's node image) that runs containerd and the
kubelet of tests/controlplane/bin (the same Go module as the API server), Debian's
runc and CNI plugins, and registers with a ControlPlane that listens on the podman
network's gateway. Pods get addresses from the node's pod range (spec.podCIDR, which
the controller manager allocates) on a CNI bridge. No registry is reachable: images
are imported into containerd from archives.

The container is privileged (containerd mounts, iptables, cgroups) with its own cgroup
namespace, so the kubelet's cgroup paths are the ones runc sees. It shares the
machine's kernel: the kubelet sets three host-wide kernel values when it starts, which
`start()` and `destroy()` put back.
"""

from __future__ import annotations

import ipaddress
import json
import os
import string
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.support.controlplane import BINARY, ROOT, lab_ranges
from tests.support.oci import write_image

NODE_FILES = ROOT / "tests" / "controlplane" / "node"
BIN_DIR = BINARY.parent
IMAGE = "localhost/debian-systemd:bookworm"
GO = os.environ.get("GO", "/usr/local/go/bin/go")
# What runs on a node, in the order it starts.
NODE_UNITS = (
    "containerd.service",
    "kubelet.service",
    "kube-proxy.service",
    "kube-network-policies.service",
)
# The sandbox image containerd is told to use: its name comes from its configuration.
PAUSE_IMAGE = tomllib.loads((NODE_FILES / "containerd.toml").read_text())["plugins"][
    "io.containerd.cri.v1.images"
]["pinned_images"]["sandbox"]
# k3s's defaults, which the k3s role keeps: the cluster DNS Service takes the tenth address
# of the Service range.
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS_INDEX = 10
# The cluster DNS image, named by the CoreDNS release the module builds.
COREDNS_IMAGE_NAME = "localhost/coredns"
# Set by the kubelet at start (it keeps kernel defaults only when told to refuse them).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


def run(
    argv: list[str], timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:6])} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def read_sysctls() -> dict[str, str]:
    return {key: Path("/proc/sys", key).read_text().strip() for key in KUBELET_SYSCTLS}


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        if Path("/proc/sys", key).read_text().strip() != value:
            Path("/proc/sys", key).write_text(value)


class Network:
    """A podman network for nodes; its gateway is this machine's address on it."""

    def __init__(self, name: str, subnet: str) -> None:
        self.name, self.subnet = name, ipaddress.ip_network(subnet)
        self.gateway = str(next(self.subnet.hosts()))

    def address(self, index: int) -> str:
        return str(self.subnet.network_address + 10 + index)

    def create(self) -> Network:
        subprocess.run(
            ["podman", "network", "rm", "-f", self.name], capture_output=True, check=False
        )
        run(
            [
                "podman",
                "network",
                "create",
                "--subnet",
                str(self.subnet),
                "--label",
                "k3s-ec2-test=1",
                self.name,
            ]
        )
        return self

    def remove(self) -> None:
        subprocess.run(
            ["podman", "network", "rm", "-f", self.name], capture_output=True, check=False
        )


def module_version(module: str) -> str:
    """The version of `module` the control plane's Go module builds."""
    return run([GO, "list", "-m", "-f", "{{.Version}}", module], cwd=BIN_DIR.parent).stdout.strip()


def build_pause(dest: Path) -> Path:
    """The pause image from the Kubernetes module's own pause.c, static, as an OCI archive."""
    version = module_version("k8s.io/kubernetes")
    modcache = run([GO, "env", "GOMODCACHE"], cwd=BIN_DIR.parent).stdout.strip()
    source = Path(modcache) / f"k8s.io/kubernetes@{version}" / "build/pause/linux/pause.c"
    binary = dest / "pause"
    run(
        [
            "gcc",
            "-static",
            "-O2",
            "-Wall",
            "-Werror",
            f"-DVERSION={version}-lab",
            "-o",
            str(binary),
            str(source),
        ]
    )
    run(["strip", str(binary)])
    archive = dest / "pause.tar"
    write_image(
        archive,
        PAUSE_IMAGE,
        {"pause": (binary.read_bytes(), 0o755)},
        ["/pause"],
        user="65535:65535",
    )
    return archive


def build_coredns(dest: Path) -> Path:
    """The cluster DNS image: the module's CoreDNS binary alone (static), as an OCI archive."""
    version = module_version("github.com/coredns/coredns")
    archive = dest / "coredns.tar"
    write_image(
        archive,
        f"{COREDNS_IMAGE_NAME}:{version}",
        {"coredns": ((BIN_DIR / "coredns").read_bytes(), 0o755)},
        ["/coredns"],
        user="65532:65532",
    )
    return archive


def cluster_dns_address() -> str:
    _, service_cidr = lab_ranges()
    return str(ipaddress.ip_network(service_cidr).network_address + CLUSTER_DNS_INDEX)


def deploy_cluster_dns(controlplane: ControlPlaneAccess, node: Node) -> None:
    """Apply CoreDNS (imported on `node`, referenced by digest) and wait until it answers."""
    image = next(ref for ref in node.images() if ref.startswith(COREDNS_IMAGE_NAME + "@"))
    manifest = string.Template((NODE_FILES / "coredns.yaml").read_text()).substitute(
        image=image, cluster_dns=cluster_dns_address(), cluster_domain=CLUSTER_DOMAIN
    )
    kubectl = ["kubectl", f"--kubeconfig={controlplane.kubeconfig}", "-n", "kube-system"]
    run([*kubectl, "apply", "-f", "-"], input=manifest)
    run([*kubectl, "rollout", "status", "deployment/coredns", "--timeout=120s"], timeout=150)


READY = '{.status.conditions[?(@.type=="Ready")].status}'


def node_field(controlplane: ControlPlaneAccess, node: str, jsonpath: str) -> str:
    """A field of a Node object, "" while the API server does not know the node."""
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={controlplane.kubeconfig}", "get", "node", node,
         "-o", f"jsonpath={jsonpath}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else ""


class ControlPlaneAccess(Protocol):
    """What a node needs of its control plane (ControlPlane has it)."""

    data_dir: Path
    url: str
    kubeconfig: Path


@dataclass
class RunningControlPlane:
    """A control plane another process started (the lab's)."""

    data_dir: Path
    url: str

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"


class Node:
    """Create with `create()` (before the control plane starts: the network's gateway
    exists once a container is attached), then `join(controlplane)`."""

    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address
        self.host_sysctls = read_sysctls()

    # -- container ---------------------------------------------------------
    def create(self, network: str, label: str = "k3s-ec2-test=1") -> Node:
        # The host image is built once per machine (debootstrap), by whichever suite needs it first.
        run(
            ["bash", str(ROOT / "scripts/build-host-images.sh"), IMAGE.rsplit(":", 1)[1]],
            timeout=900,
        )
        subprocess.run(["podman", "rm", "-f", "-v", self.name], capture_output=True, check=False)
        run(
            [
                "podman",
                "run",
                "-d",
                "--name",
                self.name,
                "--hostname",
                self.name,
                "--privileged",
                "--cgroupns=private",
                "--systemd=always",
                "--network",
                network,
                "--ip",
                self.address,
                "--label",
                label,
                # The container shares this machine's kernel: its systemd must not apply
                # sysctl.d or load modules.
                "-v",
                "/dev/null:/etc/systemd/system/systemd-sysctl.service:ro",
                "-v",
                "/dev/null:/etc/systemd/system/systemd-modules-load.service:ro",
                "-v",
                f"{BIN_DIR}:/opt/node/bin:ro",
                "-v",
                "/usr/sbin/runc:/usr/sbin/runc:ro",
                "-v",
                "/usr/lib/cni:/usr/lib/cni:ro",
                # overlayfs cannot stack on the container's own overlay root.
                "-v",
                "/var/lib/containerd",
                "-v",
                "/var/lib/kubelet",
                IMAGE,
                "/sbin/init",
            ]
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["podman", "exec", self.name, "systemctl", "is-system-running"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if state in ("running", "degraded"):
                return self
            time.sleep(0.5)
        raise TimeoutError(f"systemd in {self.name} did not come up")

    def exec(self, *argv: str, timeout: float = 120, stdin: str | None = None) -> str:
        return run(["podman", "exec", "-i", self.name, *argv], timeout=timeout, input=stdin).stdout

    def put(self, path: str, content: str, mode: str = "0644") -> None:
        self.exec("install", "-D", "-m", mode, "/dev/stdin", path, stdin=content)

    def ctr(self, *argv: str) -> str:
        return self.exec("/opt/node/bin/controlplane", "ctr", "--namespace", "k8s.io", *argv)

    # -- joining -----------------------------------------------------------
    def join(
        self, controlplane: ControlPlaneAccess, images: list[Path], timeout: float = 120
    ) -> Node:
        """Configure and start containerd, the kubelet, kube-proxy and the NetworkPolicy
        controller; import `images`; wait until the node is Ready."""
        for component, name in (
            ("kubelet", "kubeconfig"),
            ("kube-proxy", "kube-proxy.kubeconfig"),
            ("network-policies", "network-policies.kubeconfig"),
        ):
            with tempfile.TemporaryDirectory() as work:
                kubeconfig = Path(work) / name
                run(
                    [
                        str(BINARY),
                        "node-kubeconfig",
                        f"--data-dir={controlplane.data_dir}",
                        f"--node={self.name}",
                        f"--component={component}",
                        f"--server={controlplane.url}",
                        f"--out={kubeconfig}",
                    ]
                )
                self.put(f"/etc/node/{name}", kubeconfig.read_text(), "0600")
        run(
            ["kubectl", f"--kubeconfig={controlplane.kubeconfig}", "apply", "-f",
             str(NODE_FILES / "network-policies-rbac.yaml")]
        )  # fmt: skip
        # Pods' traffic leaving the cluster range is masqueraded, and the policies are
        # enforced, with iptables.
        self.exec(
            "sh",
            "-c",
            "command -v iptables >/dev/null || { export DEBIAN_FRONTEND=noninteractive;"
            " apt-get update -qq"
            " && apt-get install -y -qq --no-install-recommends iptables >/dev/null; }",
            timeout=300,
        )
        self.put("/etc/node/ca.crt", (controlplane.data_dir / "tls" / "ca.crt").read_text())
        cluster_cidr, _ = lab_ranges()
        self.put(
            "/etc/node/node.env",
            f"NODE_NAME={self.name}\nNODE_IP={self.address}\nCLUSTER_CIDR={cluster_cidr}\n",
        )
        self.put("/etc/node/containerd.toml", (NODE_FILES / "containerd.toml").read_text())
        self.put(
            "/etc/node/kubelet.yaml",
            (NODE_FILES / "kubelet.yaml").read_text()
            + f"clusterDNS: [{cluster_dns_address()}]\nclusterDomain: {CLUSTER_DOMAIN}\n",
        )
        for unit in NODE_UNITS:
            self.put(f"/etc/systemd/system/{unit}", (NODE_FILES / unit).read_text())
        # Pods on one node talk over the bridge: the policy rules only see that traffic
        # when bridged packets pass iptables.
        bridged = self.exec("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables").strip()
        if bridged != "1":
            raise RuntimeError(
                f"{self.name}: net.bridge.bridge-nf-call-iptables is {bridged!r}, not 1: "
                "NetworkPolicies would not hold between pods of one node (load br_netfilter)"
            )
        self.exec("systemctl", "daemon-reload")
        self.exec("systemctl", "start", "containerd")
        for image in images:
            self.import_image(image)
        try:
            self.exec("systemctl", "start", "kubelet")
            pod_cidr = self._wait_node_field(
                controlplane,
                "{.spec.podCIDR}",
                None,
                "did not register or got no pod range",
                time.monotonic() + timeout,
            )
            self.put(
                "/etc/cni/net.d/10-k3s-ec2.conflist", json.dumps(cni_config(pod_cidr), indent=2)
            )
            self.masquerade_leaving_traffic(pod_cidr, cluster_cidr)
            self._wait_node_field(
                controlplane, READY, "True", "not Ready", time.monotonic() + timeout
            )
            self.exec("systemctl", "start", "kube-proxy", "kube-network-policies")
        finally:
            write_sysctls(self.host_sysctls)
        return self

    def masquerade_leaving_traffic(self, pod_cidr: str, cluster_cidr: str) -> None:
        """Masquerade what the node's pods send out of the cluster range, and only that
        (as flannel does): other nodes see a pod's own address, which their policies check."""
        rule = f"POSTROUTING -s {pod_cidr} ! -d {cluster_cidr} -j MASQUERADE"
        self.exec(
            "sh", "-c", f"iptables -w -t nat -C {rule} 2>/dev/null || iptables -w -t nat -A {rule}"
        )

    def import_image(self, archive: Path) -> None:
        """Import an image archive, with the names it gives (tests/support/oci.py)."""
        target = f"/tmp/{archive.name}"
        run(["podman", "cp", str(archive), f"{self.name}:{target}"], timeout=300)
        self.ctr("images", "import", target)
        self.exec("rm", "-f", target)

    def images(self) -> dict[str, str]:
        """Every image name containerd holds, with its digest."""
        return {
            line.split()[0]: line.split()[2] for line in self.ctr("images", "ls").splitlines()[1:]
        }

    def image_digest(self, ref: str) -> str:
        """The digest containerd holds `ref` under."""
        try:
            return self.images()[ref]
        except KeyError:
            raise LookupError(f"{ref} is not imported on {self.name}") from None

    def _wait_node_field(
        self,
        controlplane: ControlPlaneAccess,
        jsonpath: str,
        done: str | None,
        what: str,
        deadline: float,
    ) -> str:
        """Poll a field of this Node until it equals `done` (or, with None, is set at all)."""
        while time.monotonic() < deadline:
            value = node_field(controlplane, self.name, jsonpath)
            if value and (done is None or value == done):
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} {what}:\n{self.journal('kubelet')}")

    def journal(self, unit: str, lines: int = 40) -> str:
        return subprocess.run(
            ["podman", "exec", self.name, "journalctl", "-u", unit, "-n", str(lines), "--no-pager"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    # -- teardown ----------------------------------------------------------
    def destroy(self) -> None:
        """Stop the kubelet, then remove the container (its pods end with it)."""
        subprocess.run(
            ["podman", "exec", self.name, "systemctl", "stop", "kubelet"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        subprocess.run(
            ["podman", "rm", "-f", "-v", "-t", "10", self.name],
            capture_output=True,
            check=False,
            timeout=120,
        )
        write_sysctls(self.host_sysctls)


def cni_config(pod_cidr: str) -> dict[str, object]:
    """A bridge on the node's pod range (masquerading is the node's own rule)."""
    network = ipaddress.ip_network(pod_cidr)
    return {
        "cniVersion": "1.0.0",
        "name": "k3s-ec2-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr, "gateway": str(next(network.hosts()))}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "loopback"},
        ],
    }


def route_pod_ranges(controlplane: ControlPlaneAccess, nodes: list[Node]) -> None:
    """Route each node's pod range to it from every other node (the nodes share one L2
    network, as flannel's host-gw backend assumes)."""
    ranges = {node.name: node_field(controlplane, node.name, "{.spec.podCIDR}") for node in nodes}
    if not all(ranges.values()):
        raise RuntimeError(f"a node has no pod range: {ranges}")
    for node in nodes:
        for other in nodes:
            if other is not node:
                node.exec("ip", "route", "replace", ranges[other.name], "via", other.address)


def main(argv: list[str] | None = None) -> int:
    """The lab's use: create node containers, then join them to its running control plane.
    python -m tests.support.node create NETWORK LABEL NAME=ADDRESS...
    python -m tests.support.node join DATA_DIR URL IMAGES_DIR NAME=ADDRESS...
    python -m tests.support.node save-sysctls FILE | restore-sysctls FILE
    (the host-wide kernel values the kubelet changes; save keeps an existing FILE)"""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.node")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create")
    create.add_argument("network")
    create.add_argument("label")
    create.add_argument("nodes", nargs="+")
    join = sub.add_parser("join")
    join.add_argument("data_dir", type=Path)
    join.add_argument("url")
    join.add_argument("images", type=Path, help="a directory of image archives to import")
    join.add_argument("nodes", nargs="+")
    for name in ("save-sysctls", "restore-sysctls"):
        sub.add_parser(name).add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "save-sysctls":
        if not args.file.exists():
            args.file.write_text(json.dumps(read_sysctls()))
        return 0
    if args.command == "restore-sysctls":
        if args.file.exists():
            write_sysctls(json.loads(args.file.read_text()))
        return 0
    nodes = [Node(*spec.split("=", 1)) for spec in args.nodes]
    if args.command == "create":
        for node in nodes:
            node.create(args.network, args.label)
        return 0
    controlplane = RunningControlPlane(args.data_dir, args.url)
    images = [build_pause(args.images), build_coredns(args.images)]
    images = list(dict.fromkeys([*images, *sorted(args.images.glob("*.tar"))]))
    for node in nodes:
        node.join(controlplane, images)
    route_pod_ranges(controlplane, nodes)
    deploy_cluster_dns(controlplane, nodes[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
