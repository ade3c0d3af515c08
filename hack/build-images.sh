#!/usr/bin/env bash
# Build the project's images with buildah, with no registry and no Docker:
#
#   localhost/rheostat/python:3.11-bookworm  Debian bookworm + Python 3.11 + pip, made
#                                           by mmdebstrap (stands in for python:3.11-slim)
#   localhost/rheostat/pause:dev             the pod sandbox (hack/pause, FROM scratch)
#   localhost/rheostat/operator:dev          from ./Dockerfile
#   localhost/rheostat/trainer:dev           from ./trainer_image/Dockerfile
#   localhost/rheostat/gp-worker:dev         from ./gp-worker.Dockerfile (the `bayesian`
#                                           sampler's GP asks, a sidecar of the operator)
#   localhost/rheostat/curl:dev              the chart's `helm test` image (hack/images/)
#
# and export them into one OCI layout folder (hack/oci_export.py) that the test
# cluster's real node imports into its containerd (tests/cluster/real_node.py).
#
# Why this shape: no registry is reachable, so `FROM python:3.11-slim` is satisfied
# by the BASE_IMAGE build argument and every build runs with --pull-never. The
# operator image has no torch. torch (PyPI's Linux wheel brings several GB of CUDA
# libraries) sits in one layer that the trainer and GP worker Dockerfiles produce
# with the same instructions, so buildah's layer cache builds it once and containerd
# stores and unpacks it once; a code-only change
# rebuilds only the small top layers. crun refuses this machine's hybrid cgroup
# layout, hence --runtime runc.
#
# Idempotent: every step is skipped when its inputs are unchanged (base image: the
# mmdebstrap arguments; the others: buildah's layer cache; the export: blobs the
# layout has already).
#
# Environment:
#   RHEOSTAT_CACHE          cache root (default ~/.cache/rheostat)
#   RHEOSTAT_BUILD_CA       CA bundle passed to pip as the optional `ca-bundle` build
#                           secret, for TLS-intercepting proxies (default: the host's
#                           /etc/ssl/certs/ca-certificates.crt if it exists; "" for none).
#                           Never stored in an image.
#   RHEOSTAT_TORCH_INDEX    torch's wheel index (default https://pypi.org/simple: the
#                           Dockerfiles' default, PyTorch's CPU index, is often not
#                           reachable from CI machines)
#   RHEOSTAT_DEBIAN_MIRROR  Debian mirror for mmdebstrap (default deb.debian.org)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${RHEOSTAT_CACHE:-$HOME/.cache/rheostat}"
K8S_VERSION="${RHEOSTAT_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${RHEOSTAT_ETCD_VERSION:-v3.6.4}"
BIN_DIR="${CACHE_ROOT}/control-plane/${K8S_VERSION}-etcd${ETCD_VERSION}"
IMAGE_DIR="${CACHE_ROOT}/images"
MIRROR="${RHEOSTAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TORCH_INDEX="${RHEOSTAT_TORCH_INDEX:-https://pypi.org/simple}"
if [[ -z "${RHEOSTAT_BUILD_CA+x}" && -s /etc/ssl/certs/ca-certificates.crt ]]; then
  RHEOSTAT_BUILD_CA=/etc/ssl/certs/ca-certificates.crt
fi
CA_BUNDLE="${RHEOSTAT_BUILD_CA:-}"

BASE_TAG=localhost/rheostat/python:3.11-bookworm
PAUSE_TAG=localhost/rheostat/pause:dev
OPERATOR_TAG=localhost/rheostat/operator:dev
TRAINER_TAG=localhost/rheostat/trainer:dev
GP_WORKER_TAG=localhost/rheostat/gp-worker:dev
CURL_TAG=localhost/rheostat/curl:dev
RUNTIME=/usr/sbin/runc

log() { printf '[build-images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

timed() {
  local name="$1"
  shift
  local start=$SECONDS
  "$@"
  log "${name} took $((SECONDS - start))s"
}

image_label() {
  buildah inspect --type image --format "{{index .ImageAnnotations \"$2\"}}" "$1" 2>/dev/null || true
}

# The base image: what python:3.11-slim gives a Dockerfile (python, pip, useradd,
# CA certificates), from Debian packages. pip may install into the system Python:
# the image is a container base, not a host, so EXTERNALLY-MANAGED is removed.
build_base() {
  local packages=python3,python3-pip,python-is-python3,ca-certificates,passwd
  local key
  key="$(printf '%s\n' bookworm "${MIRROR}" "${packages}" v1 | sha256sum | cut -c1-16)"
  if [[ "$(image_label "${BASE_TAG}" dev.rheostat.base-key)" == "${key}" ]]; then
    log "base image ${BASE_TAG} is current"
    return
  fi
  local tarball="${IMAGE_DIR}/base-bookworm-${key}.tar"
  if [[ ! -s "${tarball}" ]]; then
    log "mmdebstrap bookworm (${packages})"
    timed "mmdebstrap" mmdebstrap --quiet --variant=minbase --include="${packages}" \
      --aptopt='Acquire::Languages "none"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
      bookworm "${tarball}.tmp" "${MIRROR}"
    mv "${tarball}.tmp" "${tarball}"
  fi
  local ctr
  ctr="$(buildah from --pull-never scratch)"
  buildah add --quiet "${ctr}" "${tarball}" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 --annotation "dev.rheostat.base-key=${key}" \
    --os linux --arch amd64 "${ctr}"
  buildah commit --quiet --rm "${ctr}" "${BASE_TAG}" >/dev/null
  log "built ${BASE_TAG}"
}

build_pause() {
  local bin="${BIN_DIR}/pause"
  [[ -x "${bin}" ]] || {
    log "ERROR: ${bin} is missing: run hack/build-control-plane.sh (make control-plane)"
    return 1
  }
  local key
  key="$(sha256sum "${bin}" | cut -c1-16)"
  if [[ "$(image_label "${PAUSE_TAG}" dev.rheostat.pause-key)" == "${key}" ]]; then
    return
  fi
  local ctr
  ctr="$(buildah from --pull-never scratch)"
  buildah copy --quiet "${ctr}" "${bin}" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 \
    --annotation "dev.rheostat.pause-key=${key}" --os linux --arch amd64 "${ctr}"
  buildah commit --quiet --rm "${ctr}" "${PAUSE_TAG}" >/dev/null
  log "built ${PAUSE_TAG}"
}

bud() {
  local tag="$1" dockerfile="$2"
  # --network host: RUN steps need no network of their own, and buildah's default
  # CNI network would add a cni-podman0 bridge and iptables chains to the host.
  local args=(--layers --pull-never --runtime "${RUNTIME}" --format oci --network host
    --build-arg "BASE_IMAGE=${BASE_TAG}" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX}"
    -f "${REPO_ROOT}/${dockerfile}" -t "${tag}")
  [[ -n "${CA_BUNDLE}" ]] && args+=(--secret "id=ca-bundle,src=${CA_BUNDLE}")
  buildah bud --quiet "${args[@]}" "${REPO_ROOT}" >/dev/null
  log "built ${tag} ($(buildah inspect --type image --format '{{.FromImageID}}' "${tag}" | cut -c1-12))"
}

# All images end up, uncompressed, in ONE OCI layout folder whose blobs are stored
# once; the real node streams from it only the blobs its containerd lacks. Not
# `buildah push`: it re-reads and re-hashes every layer on each push, even one the
# destination has (about 80 s per image for the torch layer, on every code change).
# hack/oci_export.py writes only the layers the layout lacks, reassembled from
# buildah's storage and checked against their digests, and prunes unused blobs.
export_images() {
  local graph driver pairs=() tag name
  graph="$(buildah info --format '{{.store.GraphRoot}}')"
  driver="$(buildah info --format '{{.store.GraphDriverName}}')"
  if [[ "${driver}" != overlay ]]; then
    log "ERROR: buildah's storage driver is ${driver}; the export needs overlay"
    return 1
  fi
  for tag in "$@"; do
    name="${tag#localhost/rheostat/}"
    pairs+=("${name%%:*}=$(buildah inspect --type image --format '{{.FromImageID}}' "${tag}")")
  done
  # Leftovers of the earlier buildah-push export.
  rm -rf "${IMAGE_DIR}/push" "${IMAGE_DIR}"/layout/*.id
  python3 "${REPO_ROOT}/hack/oci_export.py" "${graph}" "${IMAGE_DIR}/layout" "${pairs[@]}"
}

main() {
  for tool in buildah mmdebstrap "${RUNTIME}"; do
    command -v "${tool}" >/dev/null 2>&1 || {
      log "ERROR: ${tool} not found: run hack/install-test-deps.sh (make test-deps)"
      exit 1
    }
  done
  mkdir -p "${IMAGE_DIR}"
  local start=$SECONDS
  timed "base" build_base
  timed "pause" build_pause
  timed "operator" bud "${OPERATOR_TAG}" Dockerfile
  timed "trainer" bud "${TRAINER_TAG}" trainer_image/Dockerfile
  timed "gp-worker" bud "${GP_WORKER_TAG}" gp-worker.Dockerfile
  timed "curl" bud "${CURL_TAG}" hack/images/curl.Dockerfile
  timed "export" export_images "${PAUSE_TAG}" "${OPERATOR_TAG}" "${TRAINER_TAG}" \
    "${GP_WORKER_TAG}" "${CURL_TAG}"
  buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -E '^localhost/rheostat/' >&2 || true
  log "total $((SECONDS - start))s; OCI layout in ${IMAGE_DIR}/layout ($(du -sh "${IMAGE_DIR}/layout" | cut -f1))"
}

main "$@"
