#!/usr/bin/env bash
# Provisions a worker of the Vagrant lab: installs the skep binary built on
# the host and runs `skep agent` as the systemd unit skep-agent.service,
# joining the server with the token and URL provision-server.sh left in the
# synced repository's _out/vagrant/, and importing the test images built on
# the host (make images) from _out/images. Run install-deps.sh node first.
#
#   provision-agent.sh NODE_NAME NODE_IP
#
# For tests (test/lab runs these steps on the netns lab):
#   SKEP_ROOT=DIR        every path the script reads or writes is under DIR
#                        (default /); the unit names the paths without it
#   SKEP_NO_SYSTEMCTL=1  write the unit, do not run systemctl
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 NODE_NAME NODE_IP" >&2
  exit 2
fi
name=$1 ip=$2
root=${SKEP_ROOT:-/}
root=${root%/}
src=/vagrant                   # the repository, synced by the Vagrantfile
share=$src/_out/vagrant        # written by provision-server.sh on cp
images=$src/_out/images        # make images
data=/var/lib/skep/agent       # the agent's --data-dir
envfile=/etc/skep/agent.env    # the join token, kept off the command line
unit=/etc/systemd/system/skep-agent.service

if [ ! -x "$root$src/bin/skep" ]; then
  echo "no $src/bin/skep: run 'make build' on the host, then 'vagrant reload --provision $name'" >&2
  exit 1
fi
if ! compgen -G "$root$images/*.tar" >/dev/null; then
  echo "no test images in $images: run 'make images' on the host, then 'vagrant reload --provision $name'" >&2
  exit 1
fi
if [ ! -s "$root$share/node-token" ] || [ ! -s "$root$share/server-url" ]; then
  echo "no join token in $share: the control plane is provisioned first (vagrant up cp), and its" >&2
  echo "token reaches this machine with the next sync: 'vagrant reload --provision $name'" >&2
  exit 1
fi
server=$(cat "$root$share/server-url")
install -D -m 0755 "$root$src/bin/skep" "$root/usr/local/bin/skep"
install -d -m 0700 "$(dirname "$root$envfile")"
(umask 077 && echo "SKEP_TOKEN=$(cat "$root$share/node-token")" >"$root$envfile")

# The eBPF socket programs balance the processes of one cgroup2 directory
# and those below it: the whole machine's. Debian 12 mounts cgroup2 alone
# at /sys/fs/cgroup; a hybrid machine has it at /sys/fs/cgroup/unified.
cgroup_root=/sys/fs/cgroup
[ -f /sys/fs/cgroup/unified/cgroup.procs ] && cgroup_root=/sys/fs/cgroup/unified

# The one place the agent's command line is written: the test reads it back
# from ExecStart. KillMode=process: stopping or restarting the agent stops
# the agent (which stops its containerd), not the pods' shims, so a restart
# leaves the pods running, as containerd's own unit does.
mkdir -p "$(dirname "$root$unit")"
cat >"$root$unit" <<EOF
[Unit]
Description=skep node agent (pods on its own containerd, the eBPF service dataplane)
Wants=network-online.target
After=network-online.target

[Service]
EnvironmentFile=$envfile
ExecStart=/usr/local/bin/skep agent --server $server --node-name $name --node-ip $ip --data-dir $data --cgroup-root $cgroup_root --images $images
Restart=always
RestartSec=2
KillMode=process
Delegate=yes
LimitNOFILE=1048576

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
# The agent runs a containerd of its own under its data dir; the one
# Debian's package starts is not needed.
if systemctl cat containerd.service >/dev/null 2>&1; then
  systemctl disable --now containerd.service
fi
systemctl daemon-reload
systemctl enable skep-agent.service
systemctl restart skep-agent.service
echo "agent of $name ($ip) started, joining $server"
