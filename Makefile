# DreamTwin: `make demo` and `make test` do all set-up on a fresh machine.
# GPU users: make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES ?= libusb-1.0-0 libegl1 libgl1 libglu1-mesa chromium
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dreamtwin-installed
export PYOPENGL_PLATFORM ?= egl

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)) \
	      || { echo "apt-get failed for:$$missing"; exit 1; }; \
	  else \
	    echo "Missing Debian packages. Run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,distributed]"
	$(PY) -m pip install -q --no-deps openpi-client==0.1.2
	touch $(STAMP)

DEMO_MODEL ?= assets/worldmodels/push_cube_tiny

# rank the policy zoo in the twin (ground truth), then in the shipped world model on the same seeds,
# and compare the rankings; the report is runs/demo/worldmodel/report.html
demo: setup
	$(VENV)/bin/dreamtwin eval --config configs/eval/demo.yaml
	$(VENV)/bin/dreamtwin eval --config configs/eval/demo.yaml --world worldmodel:$(DEMO_MODEL) \
	  --ground-truth runs/demo/twin --report --out runs/demo/worldmodel

test: setup
	$(PY) -m pytest -x -q --durations=15

test-fast: setup
	$(PY) -m pytest -x -q -m "not sim and not slow"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/twin_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
