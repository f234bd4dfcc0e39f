# Two commands do all set-up on a fresh machine (Python >= 3.11 with venv):
#   make run    install into .venv, then run the daemon (.env configured) or, without
#               credentials, the interactive sandbox against built-in fakes
#   make test   install into .venv, then lint, type-check and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test sandbox bench install lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	@if [ -n "$$DISCORD_TOKEN" ] || grep -qsE '^(export[[:space:]]+)?DISCORD_TOKEN=[^[:space:]#]' .env; then \
		exec $(PY) -m diswoot; \
	else \
		echo "No DISCORD_TOKEN in the environment or .env: starting the sandbox instead."; \
		exec $(PY) -m diswoot sandbox; \
	fi

sandbox: $(VENV)/.installed
	$(PY) -m diswoot sandbox

lint: $(VENV)/.installed
	$(PY) -m ruff check diswoot tests bench
	$(PY) -m mypy

test: lint
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
