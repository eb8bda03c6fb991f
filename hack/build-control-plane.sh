#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd from
# the Go module proxy into a versioned cache directory, and prints that
# directory (use it as KUBEBUILDER_ASSETS). Idempotent: a complete cache is
# reused as it is. A cold build takes about 7 minutes on 2 cores.
#
# Why build from source: there is no container engine and no download site on
# the machines ms2m is developed on, only the Go module proxy.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${MS2M_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ms2m}"
DEST="${CACHE_ROOT}/control-plane/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd)

log() { echo "build-control-plane: $*" >&2; }

complete() {
  [ -f "${DEST}/.complete" ] || return 1
  for b in "${BINARIES[@]}"; do [ -x "${DEST}/${b}" ] || return 1; done
}

if complete; then
  echo "${DEST}"
  exit 0
fi

mkdir -p "${DEST}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0

# --- Kubernetes: a scratch module that pins every staging module. ---
staging_version="v0${K8S_VERSION#v1}"   # v1.37.2 -> v0.37.2
mkdir -p "${work}/k8s"
cd "${work}/k8s"
go mod init ms2m.local/control-plane >/dev/null 2>&1
k8s_gomod="$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
[ -f "${k8s_gomod}" ] || { log "cannot download k8s.io/kubernetes@${K8S_VERSION} from the module proxy"; exit 1; }
{
  echo "require k8s.io/kubernetes ${K8S_VERSION}"
  grep -E '=> \./staging/' "${k8s_gomod}" | awk -v v="${staging_version}" '{print "replace " $1 " => " $1 " " v}'
} >> go.mod
log "resolving k8s.io/kubernetes ${K8S_VERSION} ($(grep -c '^replace' go.mod) staging modules pinned to ${staging_version})"
go get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}" \
  "k8s.io/kubernetes/cmd/kube-controller-manager@${K8S_VERSION}" \
  "k8s.io/kubernetes/cmd/kube-scheduler@${K8S_VERSION}" >/dev/null 2>&1 || \
  go get "k8s.io/kubernetes/cmd/kube-apiserver@${K8S_VERSION}"

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=${K8S_VERSION} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=${minor} \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
for b in kube-apiserver kube-controller-manager kube-scheduler; do
  log "building ${b} ${K8S_VERSION}"
  go build -trimpath -ldflags "${ldflags}" -o "${DEST}/${b}.tmp" "k8s.io/kubernetes/cmd/${b}"
  mv "${DEST}/${b}.tmp" "${DEST}/${b}"
done

# --- etcd: its own throw-away module. ---
mkdir -p "${work}/etcd"
cd "${work}/etcd"
go mod init ms2m.local/etcd >/dev/null 2>&1
log "building etcd ${ETCD_VERSION}"
go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >/dev/null 2>&1
go build -trimpath -ldflags "-s -w" -o "${DEST}/etcd.tmp" go.etcd.io/etcd/server/v3
mv "${DEST}/etcd.tmp" "${DEST}/etcd"

"${DEST}/kube-apiserver" --version >&2
"${DEST}/etcd" --version | head -1 >&2
touch "${DEST}/.complete"
echo "${DEST}"
