# Two commands for a newcomer: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LANGGRAPH_NO_VERSION_CHECK := true
export ANONYMIZED_TELEMETRY := False

.PHONY: setup demo test eval-multihop

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU build from local disk, never a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/scenemind demo

test: setup
	$(BIN)/python -m pytest -q

eval-multihop: setup
	$(BIN)/python -m evals.multihop --questions ../shared/data/multihop/musique_train.json \
		--corpus ../shared/data/multihop/musique_train_corpus.json
