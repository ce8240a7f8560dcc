# The two commands a newcomer needs: `make up` (the whole stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint system clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

system:
	bash deploy/ensure-system.sh redis-server nginx

test: $(STAMP) system
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var
