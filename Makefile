# The targets the README shows and CI calls.
VENV ?= .venv
PY := $(VENV)/bin/python
# Four workers: many tests wait on their peers (Dovecot, PostgreSQL, the sandbox). Tests are
# handed out two at a time so the long ones (run first) spread over the workers.
PYTEST_ARGS ?= -n 4 --maxschedchunk 2

.PHONY: install run test lint peers bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,fast]'
	touch $@

run: install
	$(VENV)/bin/relay serve

peers:
	sh scripts/test-peers.sh

test: install peers
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy relay

# Each benchmark prints one JSON line; the 30-minute soak has a target of its own.
bench: install peers
	@for b in bench/*.py; do [ $$b = bench/soak.py ] || $(PY) $$b || exit 1; done

soak: install peers
	$(PY) bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
