#!/usr/bin/env bash
# Control-plane benchmark with simulated nodes: 10,000 pods on 100 nodes to Running and
# into EndpointSlices, and endpoints update latency with 1,000 Services.
# PODS, NODES and SERVICES override the sizes. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p kubesim --bench controlplane
