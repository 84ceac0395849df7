# Two commands: `make demo` and `make test`; both build .venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
# The tests that need PostgreSQL, Chromium or the sqlite3 shell fail when it is
# missing; `KASMINA_REQUIRE_PG=0 make test` lets them skip instead.
KASMINA_REQUIRE_PG ?= 1

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found (set PY=...)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kasmina demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench migrations
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

test: lint typecheck
	KASMINA_REQUIRE_PG=$(KASMINA_REQUIRE_PG) $(BIN)/python -m pytest -q

# The peers (eventsourcing, MLflow, DuckDB) go into the same venv, only for this target.
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/compare.py --profile

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
