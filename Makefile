# Two commands for a newcomer: `make demo` (set up + run the main job) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LANGGRAPH_NO_VERSION_CHECK := true
export ANONYMIZED_TELEMETRY := False

.PHONY: setup postgres demo test eval-multihop

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

# The shared-state tests (--state-url) start a real PostgreSQL server: its programs come from the system's
# packages, installed here when missing (with sudo unless root), so `make test` alone works on a fresh machine.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -x "$$(pg_config --bindir 2>/dev/null)/initdb" ] || { \
	  echo "make: installing PostgreSQL's server programs (the shared-state tests start one)"; \
	  s=; [ "$$(id -u)" -eq 0 ] || s=sudo; \
	  $$s apt-get update -q && $$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; }

test: setup postgres
	$(BIN)/python -m pytest -q

eval-multihop: setup
	$(BIN)/python -m evals.multihop --questions ../shared/data/multihop/musique_train.json \
		--corpus ../shared/data/multihop/musique_train_corpus.json
