# One command each: `make demo` sets up and trains the default job; `make test` sets up and runs the tests.
.PHONY: setup demo test lint bench-toy

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/ganforge train

test: setup
	.venv/bin/ruff check src tests benchmarks scripts
	.venv/bin/python -m pytest

bench-toy: setup
	.venv/bin/python benchmarks/toy_modes.py
