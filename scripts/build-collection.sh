#!/usr/bin/env bash
# Builds the devsecops.k3s_ec2 collection tarball, complete with the cluster objects its
# roles render. In the repository the roles reach manifests/, policies/ and monitoring/
# (the one place they are edited) through links, which `ansible-galaxy collection build`
# skips; a staging copy with the links resolved is built instead.
#   scripts/build-collection.sh [OUTPUT_DIR]    (default: dist/)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/dist}"
export PATH="$repo/.venv/bin:$PATH"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
# -L copies what each link points to; nothing else of the repository goes in.
cp -rL "$repo/collections/ansible_collections/devsecops/k3s_ec2" "$stage/k3s_ec2"
find "$stage/k3s_ec2" \( -name __pycache__ -o -name .pytest_cache -o -path '*/tests/output' \) -prune -exec rm -rf {} +
mkdir -p "$out"
ansible-galaxy collection build "$stage/k3s_ec2" --output-path "$out" --force
