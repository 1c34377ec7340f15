"""The Go-built Kubernetes control plane (tests/controlplane) as a test process.

One process runs kube-apiserver and kube-controller-manager on kine/SQLite. It
listens on a free 127.0.0.1 port, keeps everything (datastore, certificates,
kubeconfig, audit log) in a temporary directory and stops on SIGTERM. No kubelet
runs: Pods are stored and scheduled by nobody, never started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import jinja2
import yaml

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "tests" / "controlplane" / "bin" / "controlplane"
BUILD_SCRIPT = ROOT / "scripts" / "build-controlplane.sh"
K3S_ROLE = ROOT / "collections" / "ansible_collections" / "devsecops" / "k3s_ec2" / "roles" / "k3s"
LAB_CONTRACT = ROOT / "inventories" / "local" / "group_vars" / "all" / "contract.yml"


def lab_ranges() -> tuple[str, str]:
    """The pods' and the Services' ranges of the lab's contract."""
    contract = yaml.safe_load(LAB_CONTRACT.read_text())
    return contract["k3s_ec2_cluster_cidr"], contract["k3s_ec2_service_cidr"]


def lab_subnet() -> str:
    """The lab network's range: its nodes stand on the contract's first public subnet."""
    return yaml.safe_load(LAB_CONTRACT.read_text())["k3s_ec2_public_subnet_cidrs"][0]


def render_k3s_role_config(dest: Path) -> tuple[Path, Path] | None:
    """Render the k3s role's Pod Security admission and audit policy templates with the
    role defaults, so the API server runs with exactly what the role installs.
    None when the role has no such templates (the binary's built-in copies apply)."""
    templates = (
        K3S_ROLE / "templates" / "psa.yaml.j2",
        K3S_ROLE / "templates" / "audit-policy.yaml.j2",
    )
    if not all(t.exists() for t in templates):
        return None
    defaults = yaml.safe_load((K3S_ROLE / "defaults" / "main.yml").read_text())
    # Only the plain k3s_psa_* / k3s_event_rate_limit_* values are used by these two files.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)  # noqa: S701 - YAML, not HTML
    env.filters["to_json"] = lambda v: json.dumps(v if isinstance(v, str | int | dict) else list(v))
    dest.mkdir(parents=True, exist_ok=True)
    rendered = []
    for template in templates:
        out = dest / template.name.removesuffix(".j2")
        out.write_text(env.from_string(template.read_text()).render(**defaults))
        rendered.append(out)
    return rendered[0], rendered[1]


def build_binary(timeout: float = 3600) -> Path:
    """Build the binary when missing or older than its sources (the script decides)."""
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0 or not BINARY.exists():
        raise RuntimeError(f"{BUILD_SCRIPT.name} failed:\n{result.stdout}{result.stderr}")
    return BINARY


class ControlPlane:
    """Start with `start()`, talk to it through `kubeconfig`, end with `stop()`."""

    def __init__(
        self,
        binary: Path = BINARY,
        admission_config: Path | None = None,
        audit_policy: Path | None = None,
        bind_address: str = "127.0.0.1",
    ) -> None:
        self.binary = binary
        self.bind_address = bind_address
        self.admission_config = admission_config
        self.audit_policy = audit_policy
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="controlplane-"))
        self.log_file = self.data_dir / "controlplane.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None

    # -- paths a test reads ------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.bind_address}:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    @property
    def sqlite_db(self) -> Path:
        return self.data_dir / "db" / "state.db"

    @property
    def audit_log(self) -> Path:
        return self.data_dir / "logs" / "audit.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    # -- process control ---------------------------------------------------
    def start(self, timeout: float = 180) -> ControlPlane:
        cluster_cidr, service_cidr = lab_ranges()
        argv = [
            str(self.binary),
            f"--data-dir={self.data_dir}",
            f"--secure-port={self.port}",
            f"--bind-address={self.bind_address}",
            f"--cluster-cidr={cluster_cidr}",
            f"--service-cidr={service_cidr}",
        ]
        if self.admission_config is None and self.audit_policy is None:
            role_files = render_k3s_role_config(self.data_dir / "k3s-role")
            if role_files:
                self.admission_config, self.audit_policy = role_files
        if self.admission_config:
            argv.append(f"--admission-config-file={self.admission_config}")
        if self.audit_policy:
            argv.append(f"--audit-policy-file={self.audit_policy}")
        started = time.monotonic()
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self.kill()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        tls = self.data_dir / "tls"
        context = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        context.load_cert_chain(str(tls / "admin.crt"), str(tls / "admin.key"))
        return context

    def _wait_ready(self, deadline: float) -> None:
        """Ready = /readyz answers 200 and the kubeconfig is written (controllers started)."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"control plane exited with {code}:\n{self.log_tail()}")
            if self.kubeconfig.exists() and self.get("/readyz") == (200, "ok"):
                return
            time.sleep(0.25)
        raise TimeoutError(f"control plane not ready at {self.url}:\n{self.log_tail()}")

    def get(self, path: str) -> tuple[int, str]:
        """GET `path` as the admin user; (0, error) when nothing answers."""
        try:
            with urllib.request.urlopen(  # noqa: S310 - the URL is our own https://<bind address>
                self.url + path, context=self._ssl_context(), timeout=5
            ) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (OSError, ssl.SSLError) as exc:
            return 0, str(exc)

    def stop(self, timeout: float = 45, check: bool = True) -> int:
        """SIGTERM, wait; returns the exit code (with `check`, anything but 0 raises)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(
                f"control plane still running {timeout}s after SIGTERM:\n{self.log_tail()}"
            ) from None
        self.proc = None
        if check and code != 0:
            raise RuntimeError(
                f"control plane exited with {code} after SIGTERM:\n{self.log_tail()}"
            )
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        """Stop (without judging the exit code) and remove the data directory."""
        try:
            self.stop(check=False)
        finally:
            self.kill()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """Environment for kubectl / Ansible children: KUBECONFIG pointing here."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "K8S_AUTH_KUBECONFIG": str(self.kubeconfig),
        }
