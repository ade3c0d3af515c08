# syntax=docker/dockerfile:1
# Operator image: `rheostat operator`, the Kopf operator the Helm chart deploys.
# Build from the repository root:
#   docker build -t ghcr.io/rheostat/rheostat-operator:0.1.0 .
#
# No torch: an operator is pulled onto CPU nodes and rolled often, and torch (6 GB
# with PyPI's CUDA wheel) served only `algorithm: bayesian`, whose GP asks run out of
# process anyway. They run in the GP ask worker (gp-worker.Dockerfile), a sidecar the
# chart adds with `gpWorker.enabled=true`; without it the chart refuses bayesian
# studies at admission and the operator marks one Failed (BayesianUnavailable).
#
# Build arguments (all optional):
#   BASE_IMAGE       a Python 3.11 image with pip (default python:3.11-slim); the test
#                    cluster uses a Debian bookworm image made by hack/build-images.sh
# Build secret (optional): `--secret id=ca-bundle,src=/path/to/ca.pem` for a TLS
# proxy; it is used by pip during the build and never stored in the image.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The non-root user before anything that changes often.
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin rheostat

# Third-party dependencies from pyproject.toml alone (the packages and README are
# empty stubs here), so a change to the code or the README reuses this layer.
# In the same layer, what the operator never imports goes: the packages' own test
# suites (~55 MB) and the Kubernetes client's asyncio twin, kubernetes.aio (~70 MB;
# the operator uses the sync client, Kopf its own aiohttp). The import check after
# it fails the build if any of that was needed after all.
WORKDIR /src
COPY pyproject.toml ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
    mkdir -p operator/rheostat trainer_image/rheostat_trainer && touch README.md \
    && pip install ".[operator]" \
    && pip uninstall --yes rheostat \
    && site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && find "${site}" -mindepth 2 -maxdepth 3 -type d \( -name tests -o -name test \) -prune \
         -exec rm -rf {} + \
    && rm -rf "${site}/kubernetes/aio" \
    && python -c 'import kopf, kubernetes.client, kubernetes.config, kubernetes.watch, optuna, optuna_dashboard, scipy.stats, cmaes'

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
