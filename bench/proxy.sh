#!/usr/bin/env bash
# kube-proxy rule programming in the benchmark's own network namespaces: full sync of
# 1,000 and 10,000 services × 5 endpoints against raw iptables-restore of the same
# rules, one endpoint change, and connect latency through a cluster IP.
# SERVICES overrides the sizes (comma-separated). Prints Markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p kubeproxy --bench proxy
