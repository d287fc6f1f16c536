#!/usr/bin/env bash
# Provisions the control plane of the Vagrant lab: installs the skep binary
# built on the host, runs `skep server` as the systemd unit
# skep-server.service and, once the server has made its join token, leaves
# the token, the API's URL and the admin config in the synced repository's
# _out/vagrant/, from where the Vagrantfile fetches them to the host, whose
# next sync brings them to the workers (provision-agent.sh).
#
#   provision-server.sh ADDRESS LB_POOL [PORT]
#
# ADDRESS is the machine's address on the node network, where the API
# listens (PORT, default 6443); LB_POOL is the range LoadBalancer addresses
# come from.
#
# For tests (test/lab runs these steps on the netns lab):
#   SKEP_ROOT=DIR        every path the script reads or writes is under DIR
#                        (default /); the unit names the paths without it
#   SKEP_NO_SYSTEMCTL=1  write the unit, do not run systemctl
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 ADDRESS LB_POOL [PORT]" >&2
  exit 2
fi
address=$1 pool=$2 port=${3:-6443}
root=${SKEP_ROOT:-/}
root=${root%/}
user=vagrant                   # who gets the admin config as ~/.skep/config
src=/vagrant                   # the repository, synced by the Vagrantfile
share=$src/_out/vagrant        # what the host and the workers read
data=/var/lib/skep/server      # the server's --data-dir
unit=/etc/systemd/system/skep-server.service

if [ ! -x "$root$src/bin/skep" ]; then
  echo "no $src/bin/skep: run 'make build' on the host, then 'vagrant provision cp'" >&2
  exit 1
fi
install -D -m 0755 "$root$src/bin/skep" "$root/usr/local/bin/skep"

# The one place the server's command line is written: the test reads it
# back from ExecStart.
mkdir -p "$(dirname "$root$unit")"
cat >"$root$unit" <<EOF
[Unit]
Description=skep control plane (API server, scheduler, controllers, embedded NATS)
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/local/bin/skep server --listen $address:$port --advertise-address $address --tls-san $address --lb-pool $pool --data-dir $data
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
echo "wrote $unit"

systemctl() {
  if [ "${SKEP_NO_SYSTEMCTL:-}" = 1 ]; then
    echo "(SKEP_NO_SYSTEMCTL) systemctl $*"
  else
    command systemctl "$@"
  fi
}
systemctl daemon-reload
systemctl enable skep-server.service
# restart, not start: a new binary or command line takes effect when the
# machine is provisioned again.
systemctl restart skep-server.service

# The server writes the join token and the admin config on its first start.
echo "waiting for the server's $data/node-token and admin.conf"
for _ in $(seq 600); do
  [ -s "$root$data/node-token" ] && [ -s "$root$data/admin.conf" ] && break
  sleep 0.2
done
if [ ! -s "$root$data/node-token" ] || [ ! -s "$root$data/admin.conf" ]; then
  echo "the server made no node-token and admin.conf in $data within 2 minutes" >&2
  [ "${SKEP_NO_SYSTEMCTL:-}" = 1 ] || journalctl -u skep-server.service -n 30 --no-pager >&2 || true
  exit 1
fi

install -D -m 0600 "$root$data/node-token" "$root$share/node-token"
install -D -m 0600 "$root$data/admin.conf" "$root$share/admin.conf"
echo "https://$address:$port" >"$root$share/server-url"
home=$(getent passwd "$user" | cut -d: -f6) || home=/home/$user
install -D -m 0600 "$root$data/admin.conf" "$root$home/.skep/config"
install -D -m 0600 "$root$data/admin.conf" "$root/root/.skep/config"
if id "$user" >/dev/null 2>&1; then
  # The host fetches the share as this user, over ssh.
  chown -R "$user:" "$root$share" "$root$home/.skep"
fi
echo "server https://$address:$port is up; join token, URL and admin config in $share"
