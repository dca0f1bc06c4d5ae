#!/usr/bin/env bash
# apiserver benchmark: creates/s through the API vs raw sled insert+flush, kubectl apply
# throughput, and watch latency with 100 watchers. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p kubesim --bench apiserver
