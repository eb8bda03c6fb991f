#!/bin/sh
# Prepares a GKE Ubuntu node for checkpoint/restore. Runs in the node setup
# DaemonSet's privileged init container (node-setup.tf), which shares the
# host's PID namespace: every command runs on the host through nsenter.
# Idempotent; it runs again after each node restart, when GKE may have
# rewritten containerd's configuration.
#
#   1. installs CRIU (CRIU_APT_SOURCE: a PPA, or "ubuntu" for the
#      distribution's package) into /usr/sbin, where the runtimes and the
#      ms2m agent look for it;
#   2. checks that containerd is a release that restores through the CRI
#      (2.1 to 2.3), and in its /etc/containerd/config.toml sets, in the CRI
#      plugin section of the file's version ([plugins."io.containerd.cri.v1.runtime"]
#      in version 3, [plugins."io.containerd.grpc.v1.cri"] in version 2),
#      enable_experimental_restore_via_create = true (containerd 2.2.7 and
#      2.3.4 and later ship restore off) and enable_criu = true where it is
#      set otherwise; then restarts containerd if the file changed. Running
#      containers keep running;
#   3. with CRIU_TCP_CLOSE=true (the default), makes sure /etc/criu/runc.conf
#      (the CRIU configuration runc, containerd's runtime, names) has the
#      option tcp-close: a checkpoint may then hold connected TCP sockets,
#      which are restored closed (CRIU refuses them otherwise). CRIU reads
#      the file on each dump and restore: nothing restarts.
#
# These are what the ms2m agent checks (pkg/agent) before it labels the node
# ms2m.io/checkpoint-restore=true; a file containerd imports can still
# override them, and the agent then says so in an Event on the node.
#
#   enable-checkpoint-restore.sh                  prepares the node
#   enable-checkpoint-restore.sh restore-config   reads a containerd
#       configuration on stdin and writes it with restore enabled, as step 2
#       does (terraform_test.go checks it against the agent)
#   enable-checkpoint-restore.sh criu-config      reads a CRIU configuration
#       on stdin and writes it with tcp-close, as step 3 does
set -eu

CRIU_APT_SOURCE="${CRIU_APT_SOURCE:-ppa:criu/ppa}"
CRIU_TCP_CLOSE="${CRIU_TCP_CLOSE:-true}"
CONFIG=/etc/containerd/config.toml
CRIU_CONFIG=/etc/criu/runc.conf

# The edit of step 3: CRIU's configuration is one option per line, named
# without its dashes, "#" starting a comment (criu(8)); tcp-close is added
# unless a line already gives it.
TCP_CLOSE_AWK='{ print } $1 == "tcp-close" { found = 1 } END { if (!found) print "tcp-close" }'

# The edit of step 2, in POSIX awk. TOML puts a file's root keys (version)
# before its first table, so the section is known at the first header. A key
# of the section is replaced where it is, or added at the section's end; a
# missing section is appended.
RESTORE_AWK=$(cat <<'EOF'
function norm(s) {
  sub(/^[ \t]*\[[ \t]*/, "", s); sub(/[ \t]*\][ \t]*(#.*)?$/, "", s)
  gsub(/'/, "\"", s); gsub(/[ \t]*\.[ \t]*/, ".", s)
  return s
}
function pick() {
  if (version == "3") want = "plugins.\"io.containerd.cri.v1.runtime\""
  else if (version == "2") want = "plugins.\"io.containerd.grpc.v1.cri\""
  else {
    printf "containerd configuration version %s: only versions 2 and 3 are supported\n", (version == "" ? "1 (none given)" : version) > "/dev/stderr"
    failed = 1; exit 2
  }
}
function finish() {
  if (insec && !done) print "  enable_experimental_restore_via_create = true"
  done = done || insec
}
function indent(line) { match(line, /^[ \t]*/); return substr(line, 1, RLENGTH) }
/^[ \t]*\[/ {
  if (want == "") pick()
  finish()
  insec = norm($0) == want
  found = found || insec
  print; next
}
want == "" && /^[ \t]*version[ \t]*=/ {
  version = $0; sub(/^[^=]*=[ \t]*/, "", version); sub(/[ \t]*(#.*)?$/, "", version)
}
insec && /^[ \t]*enable_experimental_restore_via_create[ \t]*=/ {
  print indent($0) "enable_experimental_restore_via_create = true"; done = 1; next
}
insec && /^[ \t]*enable_criu[ \t]*=/ { print indent($0) "enable_criu = true"; next }
{ print }
END {
  if (failed) exit 2
  if (want == "") pick()
  finish()
  if (!found) {
    print ""; print "[" want "]"; print "  enable_experimental_restore_via_create = true"
  }
}
EOF
)

case "${1:-}" in
  restore-config) exec awk "${RESTORE_AWK}" ;;
  criu-config) exec awk "${TCP_CLOSE_AWK}" ;;
esac

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

if [ "${CRIU_TCP_CLOSE}" = true ]; then
  old="$(host sh -c 'cat "$1" 2>/dev/null || true' sh "${CRIU_CONFIG}")"
  new="$(printf '%s\n' "${old}" | host awk "${TCP_CLOSE_AWK}")"
  if [ "${new}" != "$(printf '%s\n' "${old}")" ]; then
    echo "CRIU: tcp-close in ${CRIU_CONFIG} (connected TCP sockets are checkpointed and restored closed)"
    printf '%s\n' "${new}" | host sh -c 'mkdir -p "$(dirname "$1")" && cat > "$1"' sh "${CRIU_CONFIG}"
  fi
fi

# "containerd github.com/containerd/containerd/v2 v2.2.7 <commit>", split
# into words.
set -- $(host containerd --version)
version="${3:-unknown}"
version="${version#v}"
major="${version%%.*}"
minor="${version#*.}"
minor="${minor%%.*}"
case "${major}.${minor}" in
  2.1 | 2.2 | 2.3) ;;
  *[!0-9.]* | *..* | .* | *.)
    echo "warning: cannot read containerd's version from '$*'; enabling restore anyway" >&2
    ;;
  *)
    # Not fatal either: the agent labels the node
    # ms2m.io/checkpoint-restore=false, saying why.
    echo "warning: containerd ${version} cannot restore checkpoints through the CRI: ms2m needs containerd 2.1 to 2.3 (restore in CreateContainer arrived in 2.1 and is removed in 2.4). Choose a GKE version whose nodes run such a containerd (GKE 1.33 nodes run 2.0); leaving ${CONFIG} unchanged" >&2
    echo "node not ready for checkpoint/restore"
    exit 0
    ;;
esac

if ! host test -f "${CONFIG}"; then
  echo "no ${CONFIG}: cannot enable restore" >&2
  exit 1
fi
old="$(host cat "${CONFIG}")"
new="$(printf '%s\n' "${old}" | host awk "${RESTORE_AWK}")"
if [ "${new}" != "${old}" ]; then
  echo "enabling restore in ${CONFIG} and restarting containerd"
  host sh -c '[ -e "$1.ms2m-orig" ] || cp -p "$1" "$1.ms2m-orig"' sh "${CONFIG}"
  printf '%s\n' "${new}" | host sh -c 'cat > "$1"' sh "${CONFIG}"
  host systemctl restart containerd
fi
echo "node ready for checkpoint/restore"
