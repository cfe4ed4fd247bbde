# The two set-up commands of the README:
#   make demo   create .venv, install pinned deps, pull the bundled demo data, run the whole chain (CPU, ~17 min)
#   make test   create .venv if needed, run the fast tests (~8 min on 2 cores)
# And the long forms:
#   make demo-full   the default chain at full size with five detector seeds: presets/demo-full.yaml (~65-85 min on 2 cores)
#   make test-slow   the long tests: fresh-clone and repo-copy chains, preset chains, Prefect, Ray, S3
#   make test-all    both sets (what CI runs, fast first)
PYTHON ?= python3
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
PIP_FLAGS ?= --disable-pip-version-check --no-input
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: demo demo-full test test-slow test-all params lint docs bench clean-venv

# torch is pinned in pyproject.toml and constraints.txt: the CPU wheel, never an open CUDA pull.
# The demo needs the library and DVC only; the tests add Prefect, Ray, moto, datasets, pytest and ruff.
$(VENV)/.installed-pipeline: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -c constraints.txt -e ".[pipeline]"
	touch $@

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_FLAGS) -c constraints.txt -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-pipeline
	dvc pull -q data.dvc
	dvc repro
	diffx shards validate data/canonical
	diffx shards validate data/synthetic
	dvc metrics show metrics/vae.json metrics/eval.json
	@echo "done: data/synthetic (shards), metrics/ (headline numbers), reports/ (run reports, images),"
	@echo "      reports/quality/docs/index.html (great_expectations data docs), reports/eval/samples.png"

# The full preset runs as a named DVC experiment in this workspace: params.yaml and dvc.lock then hold the
# preset's values and run (`git checkout params.yaml dvc.lock` returns to the fast default; `dvc exp show`
# compares both).
demo-full: $(VENV)/.installed-pipeline
	dvc pull -q data.dvc
	diffx params render params.yaml --overlay presets/demo-full.yaml --out params.yaml
	dvc exp run -n demo-full
	diffx shards validate data/canonical
	diffx shards validate data/synthetic
	dvc metrics show metrics/vae.json metrics/eval.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m slow

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q

params: $(VENV)/.installed  # re-render params.yaml after changing a default in diffx/config/
	diffx params render params.yaml --out params.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check .

docs: $(VENV)/.installed  # the documentation site in site/ (warnings are errors: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/shard_io.py
	$(BIN)/python benchmarks/quality_gate.py
	$(BIN)/python benchmarks/train_vae.py
	$(BIN)/python benchmarks/train_unet.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/evaluate.py

clean-venv:
	rm -rf $(VENV)
