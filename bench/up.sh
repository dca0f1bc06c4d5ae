#!/usr/bin/env bash
# kubesim up: time from the command to a ready cluster (every node Ready, DNS answering
# through kube-proxy on every node) for 1, 2 and 5 nodes, and the idle memory of the
# whole cluster (proportional set size of every process it runs: control plane, node
# components, CoreDNS pods) after 10 s. Each cluster is removed before the next.
# NODES overrides the sizes (space-separated). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin kubesim
kubesim=target/release/kubesim
export KUBECONFIG=$(mktemp -d)/kubeconfig

pss_kib() {
    local total=0 pid
    for pid in "$@"; do
        if [ -r "/proc/$pid/smaps_rollup" ]; then
            total=$((total + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
        fi
    done
    echo "$total"
}

echo "| nodes | kubesim up → ready | processes | idle memory (Pss) |"
echo "|---|---|---|---|"
for n in ${NODES:-1 2 5}; do
    name=bu$n
    data=$(mktemp -d)/cluster
    trap '$kubesim down --name "$name" --data-dir "$data" >/dev/null 2>&1 || true' EXIT
    start=$(date +%s%N)
    $kubesim up --name "$name" --nodes "$n" --data-dir "$data" >/dev/null 2>&1
    ready_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    sleep 10
    pids=$(python3 -c 'import json,sys; print(" ".join(str(c["pid"]) for c in json.load(open(sys.argv[1]))["components"]))' "$data/cluster.json")
    for ns in $(ip netns list | awk '{print $1}' | grep "^$name-"); do
        pids="$pids $(ip netns pids "$ns" | tr '\n' ' ')"
    done
    unique=$(echo $pids | tr ' ' '\n' | sort -u | tr '\n' ' ')
    count=$(echo $unique | wc -w)
    kib=$(pss_kib $unique)
    printf '| %d | %d.%01d s | %d | %d MiB |\n' "$n" $((ready_ms / 1000)) $(((ready_ms % 1000) / 100)) "$count" $((kib / 1024))
    $kubesim down --name "$name" --data-dir "$data" >/dev/null
    trap - EXIT
done
