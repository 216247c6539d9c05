# The commands of the README: `make demo`, `make test` and `make cluster`.
# Each creates .venv from the pinned set (requirements/dev.txt) when it is missing or stale.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo lint format agent-tree matrix bench clean cluster cluster-deps

$(STAMP): requirements/dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements/dev.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

agent-tree: $(STAMP)
	$(BIN)/python -m hack.build_agent_tree

matrix: $(STAMP)
	$(BIN)/python -m hack.matrix

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict agent/pilotfish webhook/pilotfish_webhook
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint agent-tree matrix cluster-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The local cluster's node needs ip, nft and nsenter (installed with apt-get when root;
# otherwise it says what is missing and the cluster tests skip with that notice).
cluster-deps:
	sh hack/cluster/requirements.sh

demo: agent-tree cluster-deps
	$(BIN)/python -m hack.demo

# A local cluster in the foreground (docs/local-cluster.md): prints the `export KUBECONFIG=...`
# line once the API server answers; Ctrl-C stops it and removes what it created.
CLUSTER_ARGS ?=
cluster: agent-tree cluster-deps
	$(BIN)/python -m hack.cluster $(CLUSTER_ARGS)

# Overhead benchmarks (docs/benchmarks.md): servers and the OpenTelemetry peer live in their
# own venv so the dev venv never carries OTel. BENCH_ARGS e.g. '--quick' or '--write'.
BENCH_VENV := .venvs/bench
BENCH_ARGS ?=
$(BENCH_VENV)/.installed: requirements/bench.txt requirements/bench-otel.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check -r requirements/bench.txt
	rm -rf $(BENCH_VENV)/otel
	$(BENCH_VENV)/bin/python -m pip install -q --disable-pip-version-check --target $(BENCH_VENV)/otel -r requirements/bench-otel.txt
	touch $@

bench: agent-tree $(BENCH_VENV)/.installed
	$(BIN)/python -m hack.bench.run_all --python $(BENCH_VENV)/bin/python $(BENCH_ARGS)

clean:
	rm -rf build .venv .venvs .pytest_cache .mypy_cache .ruff_cache
