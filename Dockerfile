# syntax=docker/dockerfile:1
# Operator image: `rheostat operator`, the Kopf operator the Helm chart deploys.
# Build from the repository root:
#   docker build -t ghcr.io/rheostat/rheostat-operator:0.1.0 .
# Studies with `algorithm: bayesian` (Optuna's GPSampler) need torch in the
# operator; add it with --build-arg EXTRAS=operator,bayesian (a much larger image).
FROM python:3.11-slim AS build

ARG EXTRAS=operator
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer_image ./trainer_image
# Wheels for the project and every dependency, so the final stage needs no build tools.
RUN pip wheel --wheel-dir /wheels ".[${EXTRAS}]"

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels /wheels/*.whl \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin rheostat

# The chart runs it as 10001 with a read-only root filesystem and /tmp as an emptyDir.
USER 10001:10001
WORKDIR /tmp
# 8080: /metrics (--metrics-port); 8081: Kopf's liveness endpoint (--liveness).
EXPOSE 8080 8081
ENTRYPOINT ["rheostat", "operator"]
