# citysense — `make run` starts everything, `make test` checks everything, on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup system venv native lint test test-faults run bench soak clean generate
PROGRESS := bash deploy/scripts/progress.sh

help:
	@echo "make run    install everything, start the embedded stack, run the pipeline"
	@echo "make test   install everything, lint (ruff, mypy strict), run the whole suite"
	@echo "make test-faults   the fault suite alone (kills, partitions, SIGTERM under load; ~8 min)"
	@echo "make setup | lint | bench | soak | clean | generate"

setup: system venv native

# Debian packages (Mosquitto, PostgreSQL 15, Prometheus, build tools) and TimescaleDB, built
# once from Debian trixie's source package; every step is skipped when already done.
system:
	@bash deploy/scripts/install-system.sh

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "citysense needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(BIN)/python || { echo "creating the virtualenv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing the Python packages into $(VENV) (a few minutes the first time)"
	@$(PROGRESS) "pip: upgrading pip" build/logs/pip-upgrade.log \
		$(BIN)/python -m pip install --disable-pip-version-check --upgrade pip || true
	@$(PROGRESS) "pip: citysense and its dependencies" build/logs/pip-install.log \
		$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]' || true
	@# Checks the install without importing the packages: a compiled extension older than its
	@# source (after a pull) would fail the import until `make native` has rebuilt it.
	@$(BIN)/python -m pip check -q >/dev/null && $(BIN)/python -c "import importlib.metadata as m; m.version('citysense')" || { echo "venv install failed"; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

# The hot pure-Python modules (decoders, the measurement encoder) compiled with mypyc, next to
# their sources; rebuilt when one of them changes (the list is in the script).
NATIVE_STAMP := build/native/.stamp
NATIVE_SOURCES := $(shell $(PYTHON) deploy/scripts/build_native.py --list 2>/dev/null)
$(NATIVE_STAMP): $(STAMP) deploy/scripts/build_native.py $(NATIVE_SOURCES)
	@echo "compiling $(words $(NATIVE_SOURCES)) hot modules with mypyc (about a minute)"
	@mkdir -p build/native
	@$(PROGRESS) "mypyc: type-check, generate C, compile" build/native.log \
		$(BIN)/python deploy/scripts/build_native.py
	@touch $(NATIVE_STAMP)

native: $(NATIVE_STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup lint
	@$(BIN)/pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$status

# The fault suite alone (docs/faults.md): the four stages as processes behind fault proxies,
# killed, partitioned and stopped under load; `make test` runs it too, with the rest.
# CITYSENSE_FAULTS_PARTITION_S shortens the 60 s partitions for a quick local run.
test-faults: setup
	$(BIN)/pytest tests/faults

# The pipeline in the foreground (ingest, aggregate, sink and the publication API in one process),
# the simulated Place de la Nation fleet in the background. Ctrl-C stops both; the stack stays up
# for the next run (`citysense stack down` stops it).
SIM_RATE ?= 20
run: setup
	$(BIN)/citysense stack up
	@api="http://127.0.0.1:$${CITYSENSE_PUBLISH_PORT:-28084}"; \
	env_of() { $(BIN)/citysense stack env | sed -n "s/^$$1=//p" | sed 's|//\([^:@/]*\):[^@]*@|//\1@|'; }; \
	echo ""; \
	echo "citysense is starting: the pipeline below, the nation fleet at $(SIM_RATE) msg/s in the background."; \
	echo "Where to look:"; \
	echo "  display page, API   $$api/   (datasets: $$api/api/explore/v2.1/catalog/datasets, docs: $$api/docs)"; \
	echo "  live status         $(BIN)/citysense status   (in another terminal: rates, lag, dead letters, sites)"; \
	echo "  Prometheus          $$(env_of CITYSENSE_PROMETHEUS_URL)"; \
	echo "  pipeline metrics    http://127.0.0.1:$${CITYSENSE_HTTP_PORT:-28080}/metrics  (/healthz, /readyz)"; \
	echo "  Kafka               $$(env_of CITYSENSE_KAFKA_BOOTSTRAP): city.<kind>.measurements.v1, city.<kind>.aggregates.v1, city.late.v1, city.deadletter.v1"; \
	echo "  TimescaleDB         $$(env_of CITYSENSE_DATABASE_URL)   (credentials: $(BIN)/citysense stack env)"; \
	echo "  logs                here; the stack's and the simulator's in .stack/logs/"; \
	echo "Stop with Ctrl-C (the stack stays up; '$(BIN)/citysense stack down' stops it)."; \
	echo ""
	@$(BIN)/citysense simulate --rate $(SIM_RATE) --duration 31536000 >.stack/logs/simulator.log 2>&1 & sim=$$!; \
	trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/citysense run

# Files generated from the code (the tests fail when they are stale): the metrics catalogue
# (docs/metrics.md) and the Grafana dashboards (deploy/grafana/dashboards/).
generate: venv
	$(BIN)/python -m citysense.ops catalogue --write
	$(BIN)/python -m citysense.ops dashboards --write

# Every benchmark, then BENCHMARKS.md and its plot from the run (benchmarks/report.py). The
# end-to-end run lasts CITYSENSE_BENCH_E2E_SECONDS (default 600, the 10-minute target): about
# 55 minutes in all.
bench: setup
	$(BIN)/python -m benchmarks

# The whole pipeline at 5,000 msg/s for 10 minutes (CITYSENSE_SOAK_MINUTES), RSS and lag
# sampled; bench-results/soak-<time>.json and its plot soak-<time>.png. Not part of CI.
soak: setup
	$(BIN)/python -m benchmarks.end_to_end --soak

clean:
	-@test -x $(BIN)/citysense && $(BIN)/citysense stack purge
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis bench-results build
	find decoders schemas -name '*.so' -delete; rm -f ./*__mypyc*.so
