# citysense — `make run` starts everything, `make test` checks everything, on a fresh machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help setup system venv native lint test run bench clean generate

help:
	@echo "make run    install everything, start the embedded stack, run the pipeline"
	@echo "make test   install everything, lint (ruff, mypy strict), run the whole suite"
	@echo "make setup | lint | bench | clean | generate"

setup: system venv native

# Debian packages (Mosquitto, PostgreSQL 15, Prometheus, build tools) and TimescaleDB, built
# once from Debian trixie's source package; every step is skipped when already done.
system:
	@bash deploy/scripts/install-system.sh

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "citysense needs $(PYTHON) on PATH"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
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
	@$(BIN)/python deploy/scripts/build_native.py >build/native.log 2>&1 || { tail -30 build/native.log; exit 1; }
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

# The pipeline in the foreground, the simulated Place de la Nation fleet in the background.
SIM_RATE ?= 20
run: setup
	$(BIN)/citysense stack up
	@echo ""
	@echo "citysense is running. Where to look:"
	@echo "  pipeline metrics   http://127.0.0.1:$${CITYSENSE_HTTP_PORT:-28080}/metrics  (/healthz, /readyz)"
	@echo "  Prometheus         $$($(BIN)/citysense stack env | sed -n 's/^CITYSENSE_PROMETHEUS_URL=//p')"
	@echo "  Kafka topics       city.<kind>.measurements.v1, city.<kind>.aggregates.v1, city.late.v1, city.deadletter.v1 on $$($(BIN)/citysense stack env | sed -n 's/^CITYSENSE_KAFKA_BOOTSTRAP=//p')"
	@echo "  service logs       .stack/logs/ (simulator: .stack/logs/simulator.log)"
	@echo "  connection env     $(BIN)/citysense stack env"
	@echo "Stop with Ctrl-C; '$(BIN)/citysense stack down' stops the stack."
	@$(BIN)/citysense simulate --rate $(SIM_RATE) --duration 31536000 >.stack/logs/simulator.log 2>&1 & sim=$$!; \
	trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/citysense run

# Files generated from the code (the tests fail when they are stale): the metrics catalogue
# (docs/metrics.md) and the Grafana dashboards (deploy/grafana/dashboards/).
generate: venv
	$(BIN)/python -m citysense.ops catalogue --write
	$(BIN)/python -m citysense.ops dashboards --write

bench: setup
	$(BIN)/python -m benchmarks

clean:
	-@test -x $(BIN)/citysense && $(BIN)/citysense stack purge
	rm -rf $(VENV) .stack .mypy_cache .ruff_cache .pytest_cache .hypothesis bench-results build
	find decoders schemas -name '*.so' -delete; rm -f ./*__mypyc*.so
