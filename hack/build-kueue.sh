#!/usr/bin/env bash
# Build Kueue (sigs.k8s.io/kueue, the batch admission controller) from its Go module
# into the test-cluster cache, next to the control plane, with the CRDs and webhook
# manifests of the same module version.
#
# Why: the integration tests run real Kueue outside the cluster with a kubeconfig
# (tests/cluster/kueue.py); no registry ships its binary here and there is no
# container engine. About 7.5-14 min cold on 2 busy cores, 84 MB stripped; a rerun with the
# binary present is a no-op. See ../shared/reference/kueue.md.
#
# Environment:
#   RHEOSTAT_CACHE          cache root (default ~/.cache/rheostat)
#   RHEOSTAT_KUEUE_VERSION  module version (default v0.17.0, the one the proxy serves)
#   BUILD_PARALLELISM       go build -p (default 2)
set -euo pipefail

KUEUE_VERSION="${RHEOSTAT_KUEUE_VERSION:-v0.17.0}"
PARALLELISM="${BUILD_PARALLELISM:-2}"
CACHE_ROOT="${RHEOSTAT_CACHE:-$HOME/.cache/rheostat}"
OUT_DIR="${CACHE_ROOT}/kueue/${KUEUE_VERSION}"

log() { printf '[build-kueue %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

main() {
  if [[ -x "${OUT_DIR}/kueue" && -f "${OUT_DIR}/webhook/manifests.yaml" ]]; then
    log "kueue ${KUEUE_VERSION} already built in ${OUT_DIR}"
    exit 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
      export PATH="/usr/local/go/bin:${PATH}"
    else
      log "ERROR: Go toolchain not found (need go >= 1.25 to build kueue ${KUEUE_VERSION})"
      exit 1
    fi
  fi
  export CGO_ENABLED=0
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
  local start=$SECONDS
  # Global, not local: the EXIT trap runs after main has returned.
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/rheostat-kueue-build.XXXXXX")"
  trap 'rm -rf "${WORK}"' EXIT
  mkdir -p "${OUT_DIR}"
  log "building kueue ${KUEUE_VERSION} into ${OUT_DIR} ($(go version), -p ${PARALLELISM})"
  # The module's own directory: CRD bases and webhook manifests ship in it.
  local src
  src="$(cd "${WORK}" && GOFLAGS= go mod download -json "sigs.k8s.io/kueue@${KUEUE_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -d "${src}/config/components/crd/bases" ]] || {
    log "ERROR: could not download sigs.k8s.io/kueue@${KUEUE_VERSION}"
    return 1
  }
  rm -rf "${OUT_DIR}/crd" "${OUT_DIR}/webhook"
  mkdir -p "${OUT_DIR}/crd" "${OUT_DIR}/webhook"
  cp "${src}"/config/components/crd/bases/*.yaml "${OUT_DIR}/crd/"
  cp "${src}/config/components/webhook/manifests.yaml" "${OUT_DIR}/webhook/"
  chmod -R u+w "${OUT_DIR}/crd" "${OUT_DIR}/webhook"
  GOBIN="${WORK}/gobin" GOFLAGS= go install -p "${PARALLELISM}" -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kueue/cmd/kueue@${KUEUE_VERSION}"
  mv "${WORK}/gobin/kueue" "${OUT_DIR}/kueue"
  log "kueue ${KUEUE_VERSION} took $((SECONDS - start))s; $(du -h "${OUT_DIR}/kueue" | cut -f1)"
}

main "$@"
