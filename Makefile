# Set up a virtual environment with accel and run the demo or the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow install bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[tensorboard,test,openvino]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/accel profile examples/image_pipeline.py --json accel-runs/image_pipeline.json

# The suite runs as one pytest process per part of the package: in-process runtimes (ONNX Runtime,
# OpenVINO, inductor) stay within their part, and a native crash in one part cannot hide the rest.
TEST_PARTS := tests/cli tests/core tests/gating tests/optimizing/optimizers \
	'tests/optimizing/test_*.py' tests/profiling tests/security 'tests/test_*.py'

# Each part runs on two pytest-xdist workers: most tests wait on a subprocess (the console script, a
# bench worker, a hang limit), so two at a time halve the wall time on a 2-core machine (the security
# part's slow tests: 23 min alone, 11 min on two workers, on a 2-core AVX2 EPYC).
PYTEST := $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 --dist worksteal

# `make test` is the suite a developer runs (the tests not marked slow); `make test-slow` the slow
# ones (real models end to end, console-script runs, browsers, signals). CI runs both.
test: $(STAMP)
	@status=0; for part in $(TEST_PARTS); do \
		echo "== pytest $$part (not slow)"; \
		$(PYTEST) -m "not slow" $$part || [ $$? = 5 ] || status=1; \
	done; exit $$status

test-slow: $(STAMP)
	@status=0; for part in $(TEST_PARTS); do \
		echo "== pytest $$part (slow)"; \
		$(PYTEST) -m slow $$part || [ $$? = 5 ] || status=1; \
	done; exit $$status

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) accel-runs accel-out
