#!/usr/bin/env bash
# Installs a pinned command-line tool from the Go module proxy into a
# versioned cache directory and prints the binary's path. Idempotent: an
# installed tool is reused as it is. Used by the tests (helm, terraform) so a
# fresh clone needs nothing but Go.
#
#   hack/go-tool.sh helm        # helm.sh/helm/v3 v3.22.0 (about 4 minutes cold on 2 cores)
#   hack/go-tool.sh terraform   # github.com/hashicorp/terraform v1.5.7
set -euo pipefail

case "${1:-}" in
  helm) pkg="helm.sh/helm/v3/cmd/helm"; version="v3.22.0" ;;
  terraform) pkg="github.com/hashicorp/terraform"; version="v1.5.7" ;;
  *) echo "usage: $0 helm|terraform" >&2; exit 2 ;;
esac
name="$1"
cache="${MS2M_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ms2m}"
dest="${cache}/tools/${name}-${version}"
if [ -x "${dest}/${name}" ]; then
  echo "${dest}/${name}"
  exit 0
fi
echo "go-tool: installing ${pkg}@${version} into ${dest}" >&2
mkdir -p "${dest}"
# Install into a scratch directory and move into place, so a concurrent or
# interrupted install never leaves a half-written binary behind.
tmp="$(mktemp -d "${dest}/.install.XXXXXX")"
trap 'rm -rf "${tmp}"' EXIT
GOBIN="${tmp}" GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 go install "${pkg}@${version}"
mv -f "${tmp}/${name}" "${dest}/${name}"
echo "${dest}/${name}"
