# All set-up from a fresh clone: `make test` installs what it needs, then runs the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: install test quickstart clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned, so nothing later can pull a CUDA build
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) tools/run_tests.py -q $(PYTEST_ARGS)

# The whole story on synthetic data (train dw5 + rep3, quantize PTQ + QAT, benchmark every target, gap study, demo
# video) in about 15 minutes on 2 CPU cores (128 px, 400 images, 5 epochs per model); report in runs/quickstart/index.md. Short schedule: low accuracy.
quickstart: $(STAMP)
	$(VENV)/bin/rtmdet-edge quickstart --out runs/quickstart --minutes 15 --force

clean:
	rm -rf $(VENV) build *.egg-info
