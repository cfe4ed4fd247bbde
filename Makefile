# The two set-up commands of the README:
#   make demo   create .venv, install pinned deps, pull the bundled demo data, run the whole chain (CPU)
#   make test   create .venv if needed, run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
PIP_FLAGS ?= --disable-pip-version-check --no-input
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: demo test params lint bench clean-venv

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned in pyproject.toml and constraints.txt: the CPU wheel, never an open CUDA pull.
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	dvc pull -q data.dvc
	dvc repro
	diffx shards validate data/canonical
	diffx shards validate data/synthetic
	dvc metrics show metrics/vae.json metrics/eval.json
	@echo "done: data/synthetic (shards), metrics/ (headline numbers), reports/ (run reports, images),"
	@echo "      reports/quality/docs/index.html (great_expectations data docs), reports/eval/samples.png"

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

params: $(VENV)/.installed  # re-render params.yaml after changing a default in diffx/config.py
	diffx params render params.yaml --out params.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/shard_io.py
	$(BIN)/python benchmarks/quality_gate.py
	$(BIN)/python benchmarks/train_vae.py
	$(BIN)/python benchmarks/train_unet.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/evaluate.py

clean-venv:
	rm -rf $(VENV)
