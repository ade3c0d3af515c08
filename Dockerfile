# syntax=docker/dockerfile:1
# Operator image: `rheostat operator`, the Kopf operator the Helm chart deploys.
# Build from the repository root:
#   docker build -t ghcr.io/rheostat/rheostat-operator:0.1.0 .
#
# torch is always in: `algorithm: bayesian` (Optuna's GPSampler) is written in torch,
# and a study must not fail at its first ask because of how the image was built.
# CPU wheels by default; the torch layer is byte-for-byte the same instruction as in
# trainer_image/Dockerfile, so a builder with a layer cache builds and stores it once
# for both images.
#
# Build arguments (all optional):
#   BASE_IMAGE       a Python 3.11 image with pip (default python:3.11-slim); the test
#                    cluster uses a Debian bookworm image made by hack/build-images.sh
#   TORCH_INDEX_URL  where torch comes from (default: PyTorch's CPU wheel index)
# Build secret (optional): `--secret id=ca-bundle,src=/path/to/ca.pem` for a TLS
# proxy; it is used by pip during the build and never stored in the image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# torch first, in its own layer: by far the largest and it changes least.
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4"

# The non-root user before anything that changes often.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin rheostat

# Third-party dependencies from pyproject.toml alone (the packages and README are
# empty stubs here), so a change to the code or the README reuses this layer.
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    mkdir -p operator/rheostat trainer_image/rheostat_trainer && touch README.md \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" ".[operator,bayesian]" \
    && pip uninstall --yes rheostat

# The project itself: a small layer.
COPY README.md ./
COPY operator ./operator
COPY trainer_image ./trainer_image
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    pip install --no-deps . \
    && cd / && rm -rf /src

ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# The chart runs it as 10001 with a read-only root filesystem and /tmp as an emptyDir.
USER 10001:10001
WORKDIR /tmp
# 8080: /metrics (--metrics-port); 8081: Kopf's liveness endpoint (--liveness).
EXPOSE 8080 8081
ENTRYPOINT ["rheostat", "operator"]
