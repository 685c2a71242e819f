PY ?= .venv/bin/python
RUN_DIR ?= tmp
BENCH_ARGS ?=

.PHONY: install test run sim bench lint format property-long clean

install:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,lint]'

test:
	$(PY) -m pytest -q

run:
	mkdir -p $(RUN_DIR)
	$(PY) -m reference.worker --workers 2 --schedule examples/schedule.yml --import examples.jobs \
		--db $(RUN_DIR)/queue.db --socket-dir $(RUN_DIR)/sockets

sim:
	$(PY) -m sim

bench:
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench $(BENCH_ARGS)

lint:
	$(PY) -m ruff check reference sim tests property_tests bench examples
	$(PY) -m mypy

format:
	$(PY) -m ruff format reference sim tests property_tests bench examples

property-long:
	HYPOTHESIS_PROFILE=long $(PY) -m pytest -q property_tests

clean:
	rm -rf .venv $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
