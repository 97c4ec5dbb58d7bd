# The two commands: `make run` (whole local stack + the service, foreground) and `make test` (every check and
# test, stack included). Everything else here is a building block of those two.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv system-deps gen gen-check lint buf-lint buf-breaking buf-baseline envoy-validate \
        stack-up stack-down migrate run test test-recovery test-only test-scale test-cluster bench token

help:
	@echo "make run    - start the local stack and the service (foreground)"
	@echo "make test   - install everything, start the stack, run every check and test, stop the stack"
	@echo "make bench  - benchmark (ratios against a bare grpc.aio echo baseline)"

system-deps:
	@bash scripts/system-deps.sh

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.lock requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	@printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen/python" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/project-paths.pth"
	@touch $@

gen: venv
	@bash scripts/gen.sh

gen-check: venv
	@bash scripts/gen.sh --check

lint: venv
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

buf-lint: venv
	@$(BIN)/buf lint

buf-breaking: venv
	@$(BIN)/buf breaking --against proto/baseline/v1.binpb

# Re-baseline only when a new major version is cut; v1 must stay compatible with proto/baseline/v1.binpb.
buf-baseline: venv
	@mkdir -p proto/baseline && $(BIN)/buf build -o proto/baseline/v1.binpb

envoy-validate: venv
	@bash scripts/envoy-validate.sh

stack-up: venv system-deps
	@bash scripts/stack-up.sh

stack-down:
	@bash scripts/stack-down.sh

migrate: venv
	@bash -c 'source scripts/lib/env.sh && python -m alembic upgrade heads'

run: stack-up migrate
	@bash scripts/run.sh

test: venv system-deps
	@bash scripts/test.sh

# The backup/restore drills (tests/recovery/) on a stack instance of their own (they destroy its database
# and its Redis data); CI runs it after `make test`. ARGS picks tests (default: all of tests/recovery).
test-recovery: venv system-deps
	@bash scripts/test-recovery.sh $(ARGS)

# pytest alone against a stack that is already up (for development; `make test` is what CI runs).
test-only: venv
	@bash -c 'source scripts/lib/env.sh && $(PY) -m pytest $(ARGS)'

# Scale tests (100,000 play sessions; minutes on a busy machine), outside `make test`; .ci/run runs both.
test-scale: venv system-deps
	@bash scripts/test-scale.sh

# The Redis-dependent tests against a Redis Cluster (three masters started beside the stack; a few minutes);
# .ci/run runs it after test-scale.
test-cluster: venv system-deps
	@bash scripts/test-cluster.sh

bench: stack-up
	@bash scripts/bench.sh

token: venv
	@$(PY) scripts/mint-token $(ARGS)
