# Two commands matter on a fresh machine: `make demo` and `make test`.
# Everything they need is installed from here (pip, apt-get, go), never by hand.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Control-plane binaries are built once per version and cached outside the tree.
export RHEOSTAT_CACHE ?= $(HOME)/.cache/rheostat

.PHONY: help venv demo test unit integration lint crd cluster-up cluster-down \
        control-plane test-deps bench bench-smoke run install clean helm-lint \
        images test-containers cluster-up-real

help:
	@echo "make demo         run a real study on this machine (examples/digits.yaml)"
	@echo "make test         lint + unit + e2e + integration + containers on a real node"
	@echo "make cluster-up   start the test control plane and print its kubeconfig"
	@echo "make images       build the operator and trainer images (buildah, no registry)"
	@echo "make test-containers  the container tier on a real kubelet node"
	@echo "make bench        run the benchmarks and rewrite bench/results/"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rheostat run examples/digits.yaml --workdir runs/digits --fresh

lint: $(STAMP) control-plane
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	bash hack/sync-chart-crds.sh --check
	$(PY) hack/dashboards.py --check
	$(MAKE) --no-print-directory helm-lint
	$(MAKE) --no-print-directory checkov

# helm comes from the control-plane cache (built from its Go module).
TOOLS_PATH = $(shell $(PY) -c 'from tests.cluster.binaries import tool_path; print(tool_path())' 2>/dev/null)
helm-lint: control-plane
	for values in "" charts/rheostat/ci/*-values.yaml; do \
	  PATH="$(TOOLS_PATH)" helm lint --strict $${values:+-f "$$values"} charts/rheostat || exit 1; \
	done

# Checkov (IaC security scanner) on the rendered chart, from its own venv so its pins
# never fight the project's. Exceptions, each with its reason: charts/rheostat/.checkov.yaml
# and the chart README.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

.PHONY: checkov
checkov: $(CHECKOV_VENV)/.installed control-plane
	rm -rf build/checkov && mkdir -p build/checkov
	for values in "" charts/rheostat/ci/*-values.yaml; do \
	  name=$$(basename "$${values:-chart-defaults}" .yaml); \
	  PATH="$(TOOLS_PATH)" helm template rheostat charts/rheostat --namespace rheostat \
	    $${values:+-f "$$values"} --set networkPolicy.enabled=true --set dashboard.enabled=true > "build/checkov/$$name.yaml" || exit 1; \
	done
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --config-file charts/rheostat/.checkov.yaml \
	  --directory build/checkov

crd: $(STAMP)
	$(VENV)/bin/rheostat crd > crds/rheostat.dev.yaml
	bash hack/sync-chart-crds.sh

# The Grafana dashboards are generated from hack/dashboards.py (grafana-foundation-sdk).
.PHONY: dashboards
dashboards: $(STAMP)
	$(PY) hack/dashboards.py

unit: $(STAMP)
	$(PY) -m pytest tests/unit tests/e2e

# System packages (openssl) and the control plane + Prometheus, built from Go modules.
test-deps:
	bash hack/install-test-deps.sh

control-plane: test-deps
	bash hack/build-control-plane.sh

integration: $(STAMP) control-plane
	$(PY) -m pytest tests/integration

# Everything: unit, e2e, integration on the process nodes, and the container tier
# (tests/containers: a real kubelet node running the images built by `make images`).
test: $(STAMP) control-plane lint images
	$(PY) -m pytest tests

# Images built from our Dockerfiles with buildah (no registry, no Docker); the real
# node of the test cluster imports them. Needs root. See docs/test-cluster.md.
images: test-deps control-plane
	bash hack/build-images.sh

# A real node (kubelet + containerd + runc + CNI bridge) running our images.
test-containers: $(STAMP) images
	$(PY) -m pytest tests/containers

cluster-up: $(STAMP) control-plane
	$(PY) -m tests.cluster up

# The same with the real node too (needs root and `make images`).
cluster-up-real: $(STAMP) images
	$(PY) -m tests.cluster up --real-node

cluster-down: $(STAMP)
	$(PY) -m tests.cluster down

# Run the operator against the current kubeconfig (all namespaces), after `make install`.
run: $(STAMP)
	$(VENV)/bin/rheostat operator

# Apply the CRDs to the current kubeconfig's cluster.
install: $(STAMP)
	kubectl apply --server-side -f crds/rheostat.dev.yaml

# Everything under bench/: the peers (Ray Tune) come with the `bench` extra, and the
# operator's overhead is measured on the test control plane.
bench: $(STAMP) control-plane
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.run --full
	$(PY) -m bench.operator_scale
	$(PY) -m bench.gp_ask
	$(PY) -m bench.lr_advice
	$(PY) -m bench.lr_schedule

bench-smoke: $(STAMP)
	$(PY) -m bench.run --smoke

# One CUDA GPU, <= 5 min: a study through `rheostat run` and report()'s per-step overhead,
# into bench/results/gpu.md. Without CUDA it says so and exits 0.
.PHONY: gpu-check
# A lent GPU machine has its own torch and no package index: there, install the
# project's wheels beside that torch and run `make gpu-check PY=python3 NO_VENV=1`.
gpu-check: $(if $(NO_VENV),,$(STAMP))
	$(PY) -m bench.gpu_check

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
