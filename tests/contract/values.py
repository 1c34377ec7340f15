"""The contract values of each inventory and what each consumer derives from them,
resolved by Ansible (tests.support.resolve), once per test session."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.resolve import resolve

INVENTORIES = ("local", "dev", "prod", "e2e")
# Provisioned through aws_network / ec2_node / rds (moto in the lab).
AWS_INVENTORIES = ("local", "dev", "prod")
# The ACME resolver: defined by k3s (Traefik), named by the service's and Grafana's Ingresses.
ACME_RESOLVER_NAMES = (
    "k3s_traefik_acme_resolver",
    "app_deploy_ingress_acme_resolver",
    "monitoring_grafana_ingress_acme_resolver",
)
# The Ingress's host: the service's and Grafana's; who may reach Grafana through it; and the
# resolver of its certificate. Each derived from the contract.
INGRESS_NAMES = (
    "app_deploy_ingress_host",
    "monitoring_grafana_ingress_host",
    "monitoring_grafana_allowed_cidrs",
    *ACME_RESOLVER_NAMES,
)
NAMES = (
    "aws_region",
    "k3s_ec2_kubeconfig_path",
    # Ranges: the VPC, the node firewall, k3s, the egress policy.
    "aws_network_vpc_cidr",
    "aws_network_public_subnet_cidrs",
    "aws_network_private_subnet_cidrs",
    "hardening_firewall_k3s_node_sources",
    "hardening_firewall_k3s_cluster_cidr",
    "hardening_firewall_k3s_service_cidr",
    "k3s_computed_config",
    "app_deploy_db_egress_cidrs",
    "app_deploy_db_host",
    # Ports: the security group and what the cluster serves.
    "ec2_node_security_group_rules",
    "ec2_node_admin_cidrs",
    "ec2_node_client_cidrs",
    "monitoring_grafana_exposure",
    "monitoring_grafana_nodeport",
    *INGRESS_NAMES,
    # Where Prometheus runs, and where the service's NetworkPolicy admits it from.
    "monitoring_namespace",
    "app_deploy_monitoring_namespace",
    # Where the service runs, and where Prometheus discovers it.
    "k3s_ec2_app_namespace",
    "app_deploy_namespace",
    "monitoring_app_namespace",
    # Kubeconfig: written by k3s, read by deploy and monitoring.
    "k3s_kubeconfig_local_path",
    "app_deploy_kubeconfig",
    "monitoring_kubeconfig",
    # Database and secret names.
    "rds_db_name",
    "app_deploy_db_name",
    "rds_secret_name",
    # Logins: what the rds stage publishes, and whether it makes k3s's.
    "rds_published",
    "rds_k3s_datastore",
    "app_deploy_gunicorn_workers",
)

Values = dict[str, Any]


def resolve_values() -> dict[str, Values]:
    with ThreadPoolExecutor(len(INVENTORIES)) as pool:
        return dict(
            zip(INVENTORIES, pool.map(lambda inv: resolve(inv, NAMES), INVENTORIES), strict=True)
        )
