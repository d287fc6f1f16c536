#!/usr/bin/env bash
# Installs what skep needs on a Debian machine, and only what is missing:
# quick when everything is there.
#
#   install-deps.sh        a development machine (make deps): everything to
#                          build, test, run the netns lab and check the
#                          Vagrantfile
#   install-deps.sh node   a node of the Vagrant lab: what `skep agent` runs
#                          (containerd, runc, the netfilter tools)
set -euo pipefail

role=${1:-dev}
case "$role" in
  dev | node) ;;
  *)
    echo "usage: $0 [node]   (no argument: a development machine)" >&2
    exit 2
    ;;
esac

# command → Debian package that provides it. A node runs pods under its
# agent's own containerd and programs iptables, nftables and conntrack.
declare -A need=(
  [containerd]=containerd
  [runc]=runc
  [iptables]=iptables
  [nft]=nftables
  [conntrack]=conntrack
  [ip]=iproute2
  [nsenter]=util-linux
  [curl]=curl
)
if [ "$role" = dev ]; then
  need+=(
    [clang]=clang
    [llc]=llvm
    [bpftool]=bpftool
    [nats-server]=nats-server
    [wrk]=wrk
    [iperf3]=iperf3
    [busybox]=busybox-static
    [vagrant]=vagrant # vagrant validate, in make test
    # test/kubectl runs kubectl 1.32 against skep server. Bookworm's own
    # kubernetes-client is 1.20, too old for the API: this is the package
    # named kubectl of the Kubernetes (pkgs.k8s.io) or Google Cloud apt
    # repository.
    [kubectl]=kubectl
  )
fi
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
if [ "$role" = dev ]; then
  # Headers for the BPF C sources (make generate).
  [ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
  [ -f /usr/include/linux/bpf.h ] || missing+=(linux-libc-dev)
  # busybox must be the static build: it is copied into the toolbox image.
  if command -v busybox >/dev/null 2>&1 && ldd "$(command -v busybox)" >/dev/null 2>&1; then
    missing+=(busybox-static)
  fi
  # The Vagrantfile's libvirt settings are checked by the libvirt provider
  # plugin (a recommendation of vagrant, so not always there).
  dpkg-query -W -f='${Status}' vagrant-libvirt 2>/dev/null | grep -q 'ok installed' || missing+=(vagrant-libvirt)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi

# The agent pins BPF maps and links under /sys/fs/bpf; systemd mounts bpffs
# at boot, a machine without systemd may not have it.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  mount -t bpf bpf /sys/fs/bpf
fi
# The eBPF socket programs attach to the cgroup2 hierarchy.
if [ ! -f /sys/fs/cgroup/unified/cgroup.procs ] && [ ! -f /sys/fs/cgroup/cgroup.procs ]; then
  echo "no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup" >&2
  exit 1
fi
echo "deps ($role): all present"
