#!/usr/bin/env bash
# Install the system packages the test tiers need from Debian.
#
# - openssl: the harness generates the ServiceAccount signing key and the real
#   node's certificates with it.
# - The real node and the images (tests/containers, `make images`): containerd,
#   runc, containernetworking-plugins (CNI bridge + host-local), buildah (builds the
#   Dockerfiles, no daemon), mmdebstrap (the Debian base image, no registry needed),
#   nftables (kube-proxy's nftables mode), iptables (the kubelet probes it), conntrack
#   (kube-proxy clears stale UDP entries) and iproute2 (the node's bridge).
# - chromium and chromium-driver: the browser test of `rheostat dashboard`
#   (tests/integration/test_dashboard_live.py) drives Debian's chromium with selenium.
#   No systemd here: none of them starts by itself; the harness starts containerd.
# Prometheus is NOT taken from Debian: its package (2.42) is built without
# kubernetes_sd_configs, which the tests need, so hack/build-control-plane.sh builds
# Prometheus from its Go module alongside the control plane.
#
# Idempotent: a no-op (a dpkg query, milliseconds) when everything is already there.
set -euo pipefail

PACKAGES=(openssl containerd runc containernetworking-plugins buildah mmdebstrap
  nftables iptables conntrack iproute2 chromium chromium-driver)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "${pkg}" 2>/dev/null || true)"
  [[ "${status}" == "installed" ]] || missing+=("${pkg}")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-test-deps: need root or sudo to apt-get install ${missing[*]}" >&2
    exit 1
  }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${missing[*]} (apt-get)" >&2
start=$SECONDS
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-test-deps: apt-get took $((SECONDS - start))s" >&2
