# The two commands a newcomer needs: `make up` (the whole stack) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test test-fast lint system clean bench bench-memory bench-profile bench-redis bench-floor bench-starve \
	bench-lighthouse bench-webhooks bench-export bench-live chaos

# Environment for `make up` (defaults): PORT=8080 REPLICAS=2 WEB_CONCURRENCY=1 VAR_DIR=./var MONITORING=on
# REDIS_TOPOLOGY=standalone (or sentinel, cluster); with REDIS_URL set, that Redis is used and
# none is started. Every port derives from PORT (docs/deploy.md#local-stack-make-up).

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The OpenAPI linters API users run (Redocly, Spectral), pinned by tooling/lint/package-lock.json.
LINT_STAMP := tooling/lint/node_modules/.installed
$(LINT_STAMP): tooling/lint/package.json tooling/lint/package-lock.json
	bash tooling/ensure-system.sh node npm
	cd tooling/lint && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# MONITORING=off: `make up` runs no Prometheus, redis_exporter or mtail, and needs none.
MONITORING ?= on

system:
	bash tooling/ensure-system.sh redis-server redis-sentinel nginx curl
	@if [ "$(MONITORING)" != "off" ]; then \
	  bash tooling/ensure-system.sh prometheus promtool prometheus-redis-exporter mtail; fi

up: $(STAMP) system
	$(BIN)/python -m tooling.up

test: $(STAMP) $(LINT_STAMP) system
	bash tooling/ensure-system.sh chromium prometheus promtool prometheus-redis-exporter mtail \
	  podman runc mmdebstrap netavark aardvark-dns iptables ip
	$(BIN)/pytest

# The quick loop, under a minute: unit and store tests on fakeredis and a real redis-server;
# no Cluster, no stack and nothing slow; `make test` runs everything, on every backend.
test-fast: $(STAMP) system
	$(BIN)/pytest -m "not e2e and not slow" -k "not cluster" -q

bench: $(STAMP) system
	bash tooling/ensure-system.sh wrk
	$(BIN)/python -m bench.run
	[ "$${BENCH_WEBHOOKS:-1}" = 0 ] || $(BIN)/python -m bench.webhooks

# py-spy samples a worker under the get and create scenarios (bench/profile.py).
bench-profile: $(STAMP) system
	bash tooling/ensure-system.sh wrk
	$(BIN)/python -m bench.profile

bench-redis: $(STAMP) system
	bash tooling/ensure-system.sh wrk
	$(BIN)/python -m bench.redis_costs

# Each write's Redis CPU with Redis alone on a core: the floor under make bench's figures.
bench-floor: $(STAMP) system
	$(BIN)/python -m bench.script_floor

# Webhook deliveries per second and the delay from a change to its delivery (bench/webhooks.py).
bench-webhooks: $(STAMP) system
	$(BIN)/python -m bench.webhooks

# The live view with 1 and 500 viewers: Redis's commands per second, scan to screen (bench/live.py).
bench-live: $(STAMP) system
	$(BIN)/python -m bench.live

# A million scans of one event exported, NDJSON and CSV: time and the worker's memory (bench/export.py).
bench-export: $(STAMP) system
	$(BIN)/python -m bench.export

# The long chaos run: both topologies over seven hosts in network namespaces, every fault
# twice, the checker over the record (tooling/chaos, docs/chaos.md). As root. A seed replays
# a run: make chaos CHAOS_ARGS="--seed 7".
chaos: $(STAMP) system
	bash tooling/ensure-system.sh iptables ip
	$(BIN)/python -m tooling.chaos --rounds 12 $(CHAOS_ARGS)

# One key's flood of expensive reads against another key's plain reads (bench/starve.py).
bench-starve: $(STAMP) system
	$(BIN)/python -m bench.starve

# Lighthouse (mobile) on the gate and box office pages of a local stack (bench/lighthouse.py).
LIGHTHOUSE_STAMP := bench/lighthouse/node_modules/.installed
$(LIGHTHOUSE_STAMP): bench/lighthouse/package.json bench/lighthouse/package-lock.json
	bash tooling/ensure-system.sh node npm chromium
	cd bench/lighthouse && npm ci --no-audit --no-fund --loglevel=error
	touch $@

bench-lighthouse: $(STAMP) $(LIGHTHOUSE_STAMP) system
	$(BIN)/python -m bench.lighthouse

bench-memory: $(STAMP) system
	$(BIN)/python -m bench.memory

lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check service tests deploy bench tooling

clean:
	rm -rf $(VENV) var tooling/lint/node_modules bench/lighthouse/node_modules
