#!/usr/bin/env bash
# make demo: a 3-node lab on this machine (nodes in network namespaces, each
# with its own agent, containerd and cgroup), the echo server deployed
# behind a Service, and the Service answering by ClusterIP, node port and
# name. On a terminal it waits for Ctrl-C, otherwise it tears down at once;
# `make demo-down` tears down a lab left running.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
skep="$top/bin/skep"
images="$top/_out/images"
lab=demo
start=$(date +%s)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

down() {
  say "tearing the lab down"
  "$skep" lab down --name "$lab" || true
}
trap down EXIT
trap 'exit 130' INT TERM

say "bringing up a 3-node lab"
run "$skep" lab up --name "$lab" --nodes 3 --images "$images"
eval "$("$skep" lab env --name "$lab")"

say "deploying the echo server (3 replicas) and a NodePort Service"
"$skep" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: 3
  selector:
    matchLabels: {app: echo}
  template:
    metadata:
      labels: {app: echo}
    spec:
      containers:
      - name: echo
        image: skep/echo:latest
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  type: NodePort
  selector: {app: echo}
  ports:
  - {port: 80, targetPort: 8080, nodePort: 31122}
YAML
for _ in $(seq 120); do
  [ "$("$skep" get deploy echo -o json | grep -o '"readyReplicas": *[0-9]*' | grep -o '[0-9]*$')" = 3 ] && break
  sleep 0.5
done
run "$skep" get nodes,pods,svc -o wide

cip=$("$skep" get svc echo -o json | grep -o '"clusterIP": *"[^"]*"' | cut -d'"' -f4)
node1=$("$skep" lab status --name "$lab" | awk '/node1/ {print $1; exit}')
nodeip=$("$skep" get nodes -o wide | awk 'NR==2 {print $6}')

say "ClusterIP $cip from $node1 (eBPF socket load balancing): the answering pod changes"
for _ in 1 2 3 4 5 6; do "$skep" lab exec --name "$lab" "$node1" -- curl -s "http://$cip/"; done

say "NodePort $nodeip:31122 from the client outside the cluster (eBPF tc)"
for _ in 1 2 3; do "$skep" lab exec --name "$lab" client -- curl -s "http://$nodeip:31122/"; done

say "by name, from a pod: echo.default.svc.cluster.local"
"$skep" apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: dns-demo
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: skep/toolbox:latest
    command: ["sh", "-c", "nslookup echo.default.svc.cluster.local && wget -q -O - http://echo/"]
YAML
for _ in $(seq 60); do
  phase=$("$skep" get pod dns-demo -o json | grep -o '"phase": *"[^"]*"' | cut -d'"' -f4)
  [ "$phase" = Succeeded ] || [ "$phase" = Failed ] && break
  sleep 0.5
done
run "$skep" get pod dns-demo
run "$skep" logs dns-demo

printf '\nfirst command to first answer: %ss\n' "$(( $(date +%s) - start ))"
cat <<TRY

Try next (in another shell):
  eval "\$($skep lab env --name $lab)"
  $skep get pods -o wide
  $skep scale deploy echo --replicas 5
  $skep rollout status deploy/echo
  $skep lab exec --name $lab $node1 -- curl -s http://$cip/
TRY
if [ -t 0 ]; then
  say "the lab stays up until Ctrl-C"
  while sleep 3600; do :; done
fi
