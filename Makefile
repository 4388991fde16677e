# `make bench`: every benchmark of docs/benchmarks.md with its quick setting (a few minutes).
# `make bench BENCH_ARGS=--full` runs the full setting; `BENCH_ARGS="leases --quick"` one of
# them. Benchmarks measure and never fail the build. Needs the dev and bench extras:
# `.venv/bin/pip install -e '.[dev,bench]'`, PostgreSQL, and `npm ci` for Azurite.
PYTHON ?= .venv/bin/python
BENCH_ARGS ?= all --quick

.PHONY: bench
bench:
	$(PYTHON) -m bench $(BENCH_ARGS)
