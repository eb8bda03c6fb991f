#!/bin/sh
# Prepares a GKE Ubuntu node for checkpoint/restore. Runs in the node setup
# DaemonSet's privileged init container (node-setup.tf), which shares the
# host's PID namespace: every command runs on the host through nsenter.
# Idempotent; it runs again after each node restart, when GKE may have
# rewritten containerd's configuration.
#
#   1. installs CRIU (CRIU_APT_SOURCE: a PPA, or "ubuntu" for the
#      distribution's package);
#   2. sets enable_experimental_restore_via_create = true in containerd's CRI
#      plugin (containerd 2.2.7 / 2.3.4 and later ship restore disabled) and
#      restarts containerd. Running containers keep running.
set -eu

CRIU_APT_SOURCE="${CRIU_APT_SOURCE:-ppa:criu/ppa}"
CONFIG=/etc/containerd/config.toml
CRI_SECTION="^[[:space:]]*\[plugins\.[\"']io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)[\"']\][[:space:]]*$"
ENABLED="^[[:space:]]*enable_experimental_restore_via_create[[:space:]]*=[[:space:]]*true"

host() { nsenter --target 1 --mount --uts --ipc --net --pid -- "$@"; }
apt() { host env DEBIAN_FRONTEND=noninteractive apt-get -y -q "$@"; }

if ! host sh -c 'command -v criu' >/dev/null 2>&1; then
  echo "installing CRIU from ${CRIU_APT_SOURCE}"
  apt update
  if [ "${CRIU_APT_SOURCE}" != ubuntu ]; then
    apt install software-properties-common
    host add-apt-repository -y "${CRIU_APT_SOURCE}"
    apt update
  fi
  apt install criu
fi
host criu --version
# The kernel features CRIU needs. Reported, not fatal: the ms2m agent probes
# the node and labels it, and the scheduler extender admits only capable
# nodes.
host criu check || echo "warning: 'criu check' failed on this node; restores may fail"

if ! host grep -Eq "${ENABLED}" "${CONFIG}"; then
  if ! host grep -Eq "${CRI_SECTION}" "${CONFIG}"; then
    echo "no CRI plugin section in ${CONFIG}: cannot enable restore" >&2
    exit 1
  fi
  echo "enabling restore in ${CONFIG} and restarting containerd"
  host sed -i -E "/${CRI_SECTION}/a enable_experimental_restore_via_create = true" "${CONFIG}"
  host systemctl restart containerd
fi
echo "node ready for checkpoint/restore"
