#!/usr/bin/env bash
# DNS benchmark: dnsperf against `kubesim dns` loaded with 1,000 and 10,000 Services,
# and in the same run against NSD serving a zone with the same A records, both on
# 127.0.0.1 (different ports). Needs dnsperf, nsd and dig (apt-get install -y
# dnsperf nsd dnsutils).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in dnsperf nsd dig; do
    command -v "$tool" >/dev/null || { echo "bench/dns.sh: $tool is missing" >&2; exit 1; }
done
cargo bench --quiet -p coredns-lite --bench dns
