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
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Placeholder until `rtmdet-edge quickstart` (the full DW-vs-Rep, PTQ/QAT story) exists: a short real run of what is
# built today — train a tiny model on synthetic data for 2 epochs (far from converged), evaluate it, export it to ONNX
# and OpenVINO, and benchmark the runtimes available here. About 5 minutes on 2 CPU cores.
QS := runs/quickstart
quickstart: $(STAMP)
	@echo "== quickstart preview: train 2 epochs -> eval -> export -> benchmark (INT8/QAT not in this version) =="
	$(VENV)/bin/rtmdet-edge train --model rtmdet-tiny --data synthetic:64 --val-data synthetic:16 --epochs 2 \
		--batch 8 --imgsz 256 --lr 0.002 --device cpu --workers 0 --eval-interval 1 --out $(QS)/train
	$(VENV)/bin/rtmdet-edge eval --weights $(QS)/train/last.pth --data synthetic:16 --imgsz 256 --device cpu --out $(QS)/eval
	$(VENV)/bin/rtmdet-edge export --weights $(QS)/train/last.pth --format onnx --imgsz 256 --out $(QS)/model.onnx
	$(VENV)/bin/rtmdet-edge benchmark --weights $(QS)/train/last.pth --targets torch,onnxruntime,openvino \
		--precision fp32,bf16 --data synthetic:16 --imgsz 256 --warmup 3 --runs 10 --batch 2 --out $(QS)/benchmark
	@echo "== done: see $(QS)/benchmark/report.md =="

clean:
	rm -rf $(VENV) build *.egg-info
