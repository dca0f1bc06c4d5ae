#!/usr/bin/env bash
# Real pods on a 3-node cluster of network namespaces (run as root): Deployment startup
# to Ready for 10, 100, 300 and 500 agnhost pods (a size above the nodes' pod capacity,
# 3 x 110, is reported, not run) against the same control plane with simulated nodes,
# memory per pod, and pod-to-pod TCP throughput across nodes (VXLAN) and on one node
# (bridge) with iperf3. PODS overrides the sizes (comma-separated).
# Removes every namespace and process it made. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p kubesim --bench pods
