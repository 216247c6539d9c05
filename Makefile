# The commands of the README: `make demo`, `make test`, `make unit` and `make cluster`.
# Each creates .venv from the pinned set (requirements/dev.txt) when it is missing or stale.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test unit demo lint format agent-tree matrix bench clean cluster cluster-deps

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

# The whole suite: in parallel on TEST_JOBS pytest-xdist workers (tests that share a machine-wide
# resource or a file's servers run in order on one worker: their xdist_group), then the `serial`
# tests (elapsed-time deadlines, local clusters with a node) alone. Which test is where: tests/conftest.py. Exit 5 ("no tests collected") of
# one half is fine when PYTEST_ARGS selects tests of the other half only.
TEST_JOBS ?= 4
test: lint agent-tree matrix cluster-deps
	@status=0; none=0; \
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup -m "not serial" $(PYTEST_ARGS) \
	  || { s=$$?; if [ $$s = 5 ]; then none=$$((none + 1)); else status=$$s; fi; }; \
	$(BIN)/python -m pytest -p no:xdist -m serial $(PYTEST_ARGS) \
	  || { s=$$?; if [ $$s = 5 ]; then none=$$((none + 1)); else status=$$s; fi; }; \
	if [ $$none = 2 ]; then status=5; fi; \
	exit $$status

# The inner loop: only the tests that start no process and no server (the `unit` marker), in
# the test process, in seconds. `make test` before you push.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:xdist -m unit $(PYTEST_ARGS)

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
