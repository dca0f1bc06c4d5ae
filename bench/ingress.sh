#!/usr/bin/env bash
# The ingress controller's cost: requests per second and latency percentiles of
# wrk (HTTP/1.1 keep-alive, 2 threads, 50 connections, 10 s) run in the external
# host's namespace, once straight to an nginx pod's IP (routed through node 1, as a
# router in front of the cluster would) and once through the ingress controller's
# LoadBalancer address with the Ingress's Host header, in the same cluster and run.
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release --bin kubesim
kubesim=target/release/kubesim
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
name=bing
data=$(mktemp -d)/cluster
export KUBECONFIG=$data/kubeconfig
trap '$kubesim down --name "$name" --data-dir "$data" >/dev/null 2>&1 || true' EXIT
$kubesim up --name "$name" --nodes 2 --data-dir "$data" >/dev/null 2>&1

kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.25", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: nginx
  rules:
  - host: bench.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
EOF
kubectl rollout status deployment/web --timeout=90s >/dev/null
pod_ip=$(kubectl get pods -l app=web -o jsonpath='{.items[0].status.podIP}')
lb_ip=$(kubectl get svc -n ingress-nginx ingress-nginx-controller -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
# The external host reaches pod IPs through node 1, as through a router.
ip -n "$name-ext" route add 10.244.0.0/16 via 192.168.1.11
for _ in $(seq 100); do
    ip netns exec "$name-ext" curl -s -m 1 -o /dev/null -H 'Host: bench.example' "http://$lb_ip/" && break
    sleep 0.1
done

run() {
    local what=$1 url=$2; shift 2
    local out
    out=$(ip netns exec "$name-ext" wrk -t2 -c50 -d10s --latency "$@" "$url")
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx or 3xx responses:/ {print $5} /Socket errors:/ {print "socket errors"}' <<<"$out")
    printf '| %s | %.0f | %s | %s | %s |\n' "$what" "$rps" "$p50" "$p99" "${errors:-0}"
}

echo "| path | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|"
run "straight to the pod ($pod_ip)" "http://$pod_ip/"
run "through the ingress controller ($lb_ip, Host: bench.example)" "http://$lb_ip/" -H 'Host: bench.example'
