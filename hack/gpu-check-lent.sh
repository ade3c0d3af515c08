#!/usr/bin/env bash
# The GPU check (`make gpu-check`) on a lent GPU machine that has its own CUDA torch
# (Python 3.12) but no package index.
#   here:  bash hack/gpu-check-lent.sh wheels   # .whl/: this project and what torch's image lacks
#   there: bash hack/gpu-check-lent.sh run      # installs .whl/ beside that torch, runs the check
# Keep /.whl/ in .git/info/exclude; the wheels travel as an ignored, carried folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORMS=(manylinux_2_34_x86_64 manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
# Pinned to what `make venv` resolved; the GPU image already has torch, numpy, scipy,
# matplotlib, scikit-learn, rich, pyyaml and prometheus-client.
MISSING=(optuna==5.0.0 alembic==1.20.1 cmaes==0.13.1 colorlog==6.12.0 greenlet==3.5.6 Mako==1.4.3
         pydantic==2.14.4 pydantic_core==2.50.5 SQLAlchemy==2.1.9 annotated-types==0.8.0
         typing-inspection==0.4.5)

case "${1:-}" in
  wheels)
    rm -rf .whl && mkdir .whl
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${PLATFORMS[@]/#/--platform=}" -d .whl "${MISSING[@]}"
    python3 -m pip wheel --quiet --no-deps -w .whl .
    du -sh .whl ;;
  run)
    nvidia-smi
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PATH="/tmp/site/bin:$PATH" PYTHONUNBUFFERED=1
    if command -v make >/dev/null; then make gpu-check PY=python3 NO_VENV=1
    else python3 -m bench.gpu_check; fi ;;
  *) echo "usage: $0 wheels|run" >&2; exit 2 ;;
esac
