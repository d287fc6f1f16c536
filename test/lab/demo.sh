#!/usr/bin/env bash
# make demo: a control plane on a temporary data dir, the introduction's
# example manifests applied to it (the two the README says are wrong are
# refused, with the reason), `skep get` showing the result, then a clean stop.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
skep="$top/bin/skep"
examples="$top/../shared/examples/intro"
[ -d "$examples" ] || examples="$top/test/e2e/testdata/intro"
work=$(mktemp -d /tmp/skep-demo.XXXXXX)
port=$(( 20000 + RANDOM % 10000 ))
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"; wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || true; }

say "starting skep server (data in $work, API on 127.0.0.1:$port)"
HOME="$work/home" "$skep" server --data-dir "$work/server" --listen "127.0.0.1:$port" \
  --nats-listen 127.0.0.1:-1 --lb-pool 198.18.200.0/28 >"$work/server.log" 2>&1 &
pid=$!
export SKEPCONFIG="$work/server/admin.conf"
for _ in $(seq 50); do [ -f "$SKEPCONFIG" ] && "$skep" get ns >/dev/null 2>&1 && break; sleep 0.2; done

say "the examples, as printed: both are refused, and nothing is written"
run "$skep" apply -f "$examples/pod.yaml"
run "$skep" apply -f "$examples/service.yaml"

say "corrected: the pod named pod1 with volumes, the service as NodePort in namespace dev"
sed 's/name: Pod1/name: pod1/; s/volumns:/volumes:/' "$examples/pod.yaml" >"$work/pod.yaml"
run "$skep" apply -f "$work/pod.yaml"
cat >"$work/dev.yaml" <<YAML
apiVersion: v1
kind: Namespace
metadata:
  name: dev
YAML
sed 's/  type: #/  type: NodePort #/' "$examples/service.yaml" >>"$work/dev.yaml.svc"
{ echo '---'; cat "$work/dev.yaml.svc"; } >>"$work/dev.yaml"
run "$skep" apply -f "$work/dev.yaml"
run "$skep" get svc -n dev -o wide

say "one Service, four types, applied one after another as kubectl apply would"
for f in service-clusterip service-nodeport service-loadbalancer service-externalname; do
  run "$skep" apply -f "$examples/$f.yaml"
  run "$skep" get svc my-service
done

say "everything"
run "$skep" get pods,svc -A -o wide

say "stopping"
