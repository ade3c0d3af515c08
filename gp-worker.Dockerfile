# syntax=docker/dockerfile:1
# GP ask worker image: `rheostat gp-worker`, where the `bayesian` sampler's asks (a
# Gaussian-process fit in torch) run for the operator. The chart runs it as a sidecar
# of the operator pod when `gpWorker.enabled=true`; the two talk over a Unix socket
# in a volume they share, so nothing outside the pod can reach it. The operator image
# itself carries no torch (see ./Dockerfile).
# Build from the repository root:
#   docker build -f gp-worker.Dockerfile -t ghcr.io/rheostat/rheostat-gp-worker:0.1.0 .
#
# Build arguments and the optional `ca-bundle` build secret are the trainer's (see
# trainer_image/Dockerfile). The lines up to the torch layer are the same as there,
# so a builder with a layer cache builds and stores the torch layer once for both
# images, and a node that runs trials already has it.
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

RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin rheostat

# Optuna, greenlet and the tuner's dependencies from pyproject.toml alone (the packages
# and README are empty stubs here): no kopf, no Kubernetes client.
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    mkdir -p operator/rheostat trainer_image/rheostat_trainer && touch README.md \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" ".[bayesian]" \
    && pip uninstall --yes rheostat

# The project itself: a small layer.
COPY README.md ./
COPY operator ./operator
COPY trainer_image ./trainer_image
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    pip install --no-deps . \
    && cd / && rm -rf /src

ENV HOME=/tmp
# The chart runs it as 10001 with a read-only root filesystem, /tmp and the socket's
# folder as emptyDirs.
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["rheostat", "gp-worker"]
