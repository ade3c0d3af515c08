#!/usr/bin/env bash
# Install the system packages the integration tests need from Debian.
#
# Only openssl: the harness generates the ServiceAccount signing key with it.
# Prometheus is NOT taken from Debian: its package (2.42) is built without
# kubernetes_sd_configs, which the tests need, so hack/build-control-plane.sh builds
# Prometheus from its Go module alongside the control plane.
#
# Idempotent: a no-op (milliseconds) when everything is already there.
set -euo pipefail

if command -v openssl >/dev/null 2>&1; then
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "install-test-deps: need root or sudo to apt-get install openssl" >&2
    exit 1
  }
  SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing openssl (apt-get)" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends openssl >/dev/null
