#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler), the real node's kubelet, kube-proxy, CoreDNS and pause program,
# and helm from their Go modules into a versioned cache folder.
#
# Why: no registry ships kube-apiserver and this machine has no container engine,
# so we build once per version (several minutes, a few GB of RAM) and reuse the
# binaries afterwards. A rerun with the binaries present is a no-op.
# See docs/test-cluster.md and ../shared/reference/control-plane.md.
#
# Environment:
#   RHEOSTAT_CACHE      cache root (default ~/.cache/rheostat)
#   KUBEBUILDER_ASSETS  a folder that already has etcd + kube-apiserver (envtest):
#                       used instead of building those, if complete
#   BUILD_PARALLELISM   go build -p (default 2)
#
# Prometheus is built too: Debian's package (hack/install-test-deps.sh) is built
# without most service discoveries, kubernetes_sd_configs included, so the harness
# runs this upstream build (same module route, same cache).
set -euo pipefail

K8S_VERSION="${RHEOSTAT_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${RHEOSTAT_ETCD_VERSION:-v3.6.4}"
HELM_VERSION="${RHEOSTAT_HELM_VERSION:-v3.19.0}"
# Cluster DNS for the real node's pods (Service names such as <svc>.<ns>.svc).
COREDNS_VERSION="${RHEOSTAT_COREDNS_VERSION:-v1.12.4}"
# Prometheus's Go module is v0.<3MMmm>.<patch> for release 3.<MM>.<patch>: 3.7.3.
PROMETHEUS_VERSION="${RHEOSTAT_PROMETHEUS_VERSION:-v0.307.3}"
PARALLELISM="${BUILD_PARALLELISM:-2}"

CACHE_ROOT="${RHEOSTAT_CACHE:-$HOME/.cache/rheostat}"
BIN_DIR="${CACHE_ROOT}/control-plane/${K8S_VERSION}-etcd${ETCD_VERSION}"
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '[build-control-plane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# Seconds since the start of a step, for the timing lines.
timed() {
  local name="$1"
  shift
  local start=$SECONDS
  "$@"
  log "${name} took $((SECONDS - start))s"
}

have_all() {
  local dir="$1"
  shift
  local b
  for b in "$@"; do
    [[ -x "${dir}/${b}" ]] || return 1
  done
}

# Everything below runs inside main so that bash parses the whole script before
# running it (editing the file during a long build cannot corrupt the run).
main() {
  mkdir -p "${BIN_DIR}"

  # envtest assets: link them in rather than building (helm is still ours).
  local cp_binaries=(kube-apiserver kube-controller-manager kube-scheduler)
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && have_all "${KUBEBUILDER_ASSETS}" etcd "${cp_binaries[@]}"; then
    log "using binaries from KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
    for b in etcd "${cp_binaries[@]}"; do
      ln -sf "${KUBEBUILDER_ASSETS}/${b}" "${BIN_DIR}/${b}"
    done
  fi

  if have_all "${BIN_DIR}" etcd "${K8S_BINARIES[@]}" helm prometheus pause coredns &&
    [[ "${BIN_DIR}/pause" -nt "${REPO_ROOT}/hack/pause/main.go" ]]; then
    log "control plane already built in ${BIN_DIR}"
    exit 0
  fi

  if ! command -v go >/dev/null 2>&1; then
    if [[ -x /usr/local/go/bin/go ]]; then
      export PATH="/usr/local/go/bin:${PATH}"
    else
      log "ERROR: Go toolchain not found (need go >= 1.24 to build Kubernetes ${K8S_VERSION})"
      exit 1
    fi
  fi

  export GOFLAGS="-mod=mod"
  export CGO_ENABLED=0
  export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
  # Module downloads and the build cache are shared across versions; only the binaries
  # are versioned.
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/rheostat-cp-build.XXXXXX")"
  trap 'rm -rf "${WORK}"' EXIT
  TOTAL_START=$SECONDS
  log "building into ${BIN_DIR} ($(go version), -p ${PARALLELISM})"

  build_etcd() {
    # A separate wrapper module: mixing etcd into the Kubernetes wrapper would let
    # minimal version selection upgrade Kubernetes' pinned dependencies.
    local mod="${WORK}/etcd"
    mkdir -p "${mod}"
    (
      cd "${mod}"
      go mod init rheostat.dev/build/etcd >/dev/null 2>&1
      go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
      go build -p "${PARALLELISM}" -trimpath -ldflags "-s -w" \
        -o "${BIN_DIR}/etcd.tmp" go.etcd.io/etcd/server/v3
      mv "${BIN_DIR}/etcd.tmp" "${BIN_DIR}/etcd"
    )
  }

  build_kubernetes() {
    # k8s.io/kubernetes requires its staging modules at v0.0.0 with local replaces;
    # the wrapper replaces each with its published v0.Y.Z (kubernetes issue 79384).
    local mod="${WORK}/kubernetes"
    local staging_version="v0${K8S_VERSION#v1}"
    local minor="${K8S_VERSION#v1.}"
    minor="${minor%%.*}"
    mkdir -p "${mod}"
    local gomod
    gomod="$(cd "${WORK}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "${gomod}" ]] || {
      log "ERROR: could not download the go.mod of k8s.io/kubernetes@${K8S_VERSION}"
      return 1
    }
    {
      echo "module rheostat.dev/build/kubernetes"
      echo
      grep -E '^(go|godebug) ' "${gomod}" || true
      echo
      echo "require k8s.io/kubernetes ${K8S_VERSION}"
      echo
      grep -E '^[[:space:]]*k8s\.io/[^ ]+ => \./staging/' "${gomod}" |
        awk -v v="${staging_version}" '{print "replace " $1 " => " $1 " " v}'
    } >"${mod}/go.mod"
    (
      cd "${mod}"
      local pkgs=()
      local b
      for b in "${K8S_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${b}"); done
      go get "${pkgs[@]/%/@${K8S_VERSION}}"
      local ldflags="-s -w"
      local pkg
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1"
        ldflags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
        ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
      done
      for b in "${K8S_BINARIES[@]}"; do
        # Already there (an earlier version of this script, or envtest's assets).
        [[ -x "${BIN_DIR}/${b}" ]] && continue
        # One binary at a time keeps peak memory at one link step.
        timed "${b}" go build -p "${PARALLELISM}" -trimpath -ldflags "${ldflags}" \
          -o "${BIN_DIR}/${b}.tmp" "k8s.io/kubernetes/cmd/${b}"
        mv "${BIN_DIR}/${b}.tmp" "${BIN_DIR}/${b}"
      done
    )
  }

  build_pause() {
    # The pod sandbox's pause process: registry.k8s.io/pause cannot be pulled here,
    # so hack/build-images.sh wraps this static binary in a FROM scratch image.
    (
      cd "${REPO_ROOT}/hack/pause"
      go build -trimpath -ldflags "-s -w" -o "${BIN_DIR}/pause.tmp" .
    )
    mv "${BIN_DIR}/pause.tmp" "${BIN_DIR}/pause"
  }

  build_coredns() {
    local gobin="${WORK}/gobin"
    GOBIN="${gobin}" GOFLAGS= go install -p "${PARALLELISM}" -trimpath -ldflags "-s -w" \
      "github.com/coredns/coredns@${COREDNS_VERSION}"
    mv "${gobin}/coredns" "${BIN_DIR}/coredns"
  }

  build_helm() {
    local gobin="${WORK}/gobin"
    GOBIN="${gobin}" GOFLAGS= go install -p "${PARALLELISM}" -trimpath -ldflags "-s -w" \
      "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
    mv "${gobin}/helm" "${BIN_DIR}/helm"
  }

  build_prometheus() {
    # Its go.mod has exclude directives, so `go install ...@version` refuses it; a
    # wrapper module copies them. The upstream build compiles in every service
    # discovery (plugins/plugins.go), kubernetes included; Debian patches it out.
    local mod="${WORK}/prometheus"
    local release="${PROMETHEUS_VERSION#v0.}"
    release="3.$((10#${release:1:2})).${release#*.}"
    mkdir -p "${mod}"
    local gomod
    gomod="$(cd "${WORK}" && go mod download -json "github.com/prometheus/prometheus@${PROMETHEUS_VERSION}" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    {
      echo "module rheostat.dev/build/prometheus"
      echo
      grep -E '^go ' "${gomod}"
      echo
      awk '/^exclude \(/{p=1} p{print} /^\)/{p=0} /^exclude [^(]/{print}' "${gomod}"
    } >"${mod}/go.mod"
    (
      cd "${mod}"
      go get "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}"
      local v=github.com/prometheus/common/version
      go build -p "${PARALLELISM}" -trimpath \
        -ldflags "-s -w -X ${v}.Version=${release} -X ${v}.Branch=release -X ${v}.Revision=module" \
        -o "${BIN_DIR}/prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus
      mv "${BIN_DIR}/prometheus.tmp" "${BIN_DIR}/prometheus"
    )
  }

  if ! have_all "${BIN_DIR}" etcd; then timed "etcd ${ETCD_VERSION}" build_etcd; fi
  if ! have_all "${BIN_DIR}" "${K8S_BINARIES[@]}"; then
    timed "kubernetes ${K8S_VERSION}" build_kubernetes
  fi
  if ! have_all "${BIN_DIR}" helm; then timed "helm ${HELM_VERSION}" build_helm; fi
  if ! have_all "${BIN_DIR}" coredns; then timed "coredns ${COREDNS_VERSION}" build_coredns; fi
  if ! [[ -x "${BIN_DIR}/pause" && "${BIN_DIR}/pause" -nt "${REPO_ROOT}/hack/pause/main.go" ]]; then
    timed "pause" build_pause
  fi
  if ! have_all "${BIN_DIR}" prometheus; then
    timed "prometheus ${PROMETHEUS_VERSION}" build_prometheus
  fi

  "${BIN_DIR}/kube-apiserver" --version >&2
  "${BIN_DIR}/etcd" --version | sed -n 1p >&2
  "${BIN_DIR}/prometheus" --version 2>&1 | sed -n 1p >&2
  log "total build time $((SECONDS - TOTAL_START))s; binaries in ${BIN_DIR}"
}

main "$@"
