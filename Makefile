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

# `make test` is the suite a developer runs (the tests not marked slow); `make test-slow` the slow
# ones (real models end to end, console-script runs, browsers, signals). CI runs both.
test: $(STAMP)
	@status=0; for part in $(TEST_PARTS); do \
		echo "== pytest $$part (not slow)"; \
		$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" $$part || [ $$? = 5 ] || status=1; \
	done; exit $$status

test-slow: $(STAMP)
	@status=0; for part in $(TEST_PARTS); do \
		echo "== pytest $$part (slow)"; \
		$(BIN)/python -m pytest -q -p no:cacheprovider -m slow $$part || [ $$? = 5 ] || status=1; \
	done; exit $$status

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) accel-runs accel-out
