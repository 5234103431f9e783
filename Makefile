# ecs-operator developer entry points. `make help` lists them.
#
# Caches live outside the clone so fresh clones (and CI) reuse them:
#   $(ECS_OPERATOR_CACHE)/target    cargo build output
#   $(ECS_OPERATOR_CACHE)/venv      ministack + microburst + moto
#   $(ECS_OPERATOR_CACHE)/envtest   kube-apiserver + etcd built from the Kubernetes Go modules

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export ECS_OPERATOR_CACHE ?= $(HOME)/.cache/ecs-operator
export CARGO_TARGET_DIR ?= $(ECS_OPERATOR_CACHE)/target
export CARGO_TERM_COLOR ?= never
VENV := $(ECS_OPERATOR_CACHE)/venv
VENV_STAMP := $(VENV)/.installed-$(shell sha256sum hack/requirements.txt | cut -c1-12)
PYTHON ?= python3
CARGO ?= cargo
OPERATOR := $(CARGO_TARGET_DIR)/debug/ecs-operator

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: tools
tools: venv envtest helm lua ## Install/build what the tests need (cached)

.PHONY: helm
helm: ## Build the pinned helm CLI from its Go module (cached)
	@hack/helm.sh >/dev/null

.PHONY: lua
lua: ## lua5.4 from Debian, for the Argo CD health-script test
	@command -v lua5.4 >/dev/null || { echo "installing lua5.4"; apt-get update -qq && apt-get install -y -qq lua5.4 >/dev/null; }

.PHONY: venv
venv: $(VENV_STAMP)
$(VENV_STAMP): hack/requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3 is required (apt-get install python3 python3-venv)"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r hack/requirements.txt
	touch $@

.PHONY: envtest
envtest: ## Build kube-apiserver + etcd from the pinned Kubernetes Go modules (cached)
	@hack/envtest/build.sh >/dev/null

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: lint
lint: ## rustfmt check + clippy (warnings are errors)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: test
test: tools lint docker-lint ## Everything CI runs: lint, unit + e2e tests, resilience scenarios, drift, make run, release build
	@$(MAKE) --no-print-directory strict-test
	@echo "== cargo test (unit + e2e against a real kube-apiserver and ECS endpoint behind the strict layer)"
	time $(CARGO) test --workspace --locked
	@$(MAKE) --no-print-directory resilience
	@$(MAKE) --no-print-directory crds-check OPERATOR_BIN=$(OPERATOR)
	@echo "== make run, until the samples are Ready"
	@$(MAKE) --no-print-directory run-check
	@echo "== release build (what the Dockerfile runs)"
	@$(MAKE) --no-print-directory release
	@echo "== make bench at a small N, to keep it working (numbers are not checked)"
	@$(MAKE) --no-print-directory bench N=20 BENCH_ARGS="--resync 10s"

.PHONY: resilience
resilience: tools ## Resilience scenarios on the real environment: fault mix, lost answers, ECS down, SIGKILL, SIGTERM, hot-loop guard
	@echo "== resilience scenarios (tests/resilience, all at once: they mostly wait)"
	time $(CARGO) test --locked -p ecs-operator --test resilience -- --test-threads 8

.PHONY: strict-test
strict-test: venv ## Test the strict ECS layer and the Application Auto Scaling launcher (testenv/strict) against a real ministack
	@echo "== strict ECS layer and Application Auto Scaling (moto) rules: their own tests against ministack"
	cd testenv/strict && $(VENV)/bin/python -m unittest test_strict_ecs.py test_aas.py

.PHONY: crds
# The generated CRDs, and the copies kustomize and Helm need inside their own trees.
CRD_COPIES := config/crd/bases/ecs-operator.yaml charts/ecs-operator/crds/ecs-operator.yaml

crds: ## Regenerate crds/ (and its copies in config/ and charts/) from the Rust types
	@mkdir -p crds config/crd/bases charts/ecs-operator/crds
	$(CARGO) run --quiet --locked -- crd > crds/ecs-operator.yaml
	@for f in $(CRD_COPIES); do cp crds/ecs-operator.yaml $$f; done
	@echo "wrote crds/ecs-operator.yaml and $(CRD_COPIES)"

# Uses the binary `cargo test` just built (same features), so no second build.
OPERATOR_BIN ?=
.PHONY: crds-check
crds-check: ## Fail if crds/ differs from what the code generates
	@mkdir -p crds
	@tmp=$$(mktemp); \
	if [ -n "$(OPERATOR_BIN)" ]; then "$(OPERATOR_BIN)" crd > $$tmp; else $(CARGO) run --quiet --locked -- crd > $$tmp; fi; \
	for f in crds/ecs-operator.yaml $(CRD_COPIES); do \
	  if ! diff -u $$f $$tmp; then \
	    echo "$$f is stale: run 'make crds' and commit the result"; rm -f $$tmp; exit 1; fi; \
	done; \
	rm -f $$tmp; echo "crds/ and its copies are up to date"

.PHONY: release
release: ## The release build the Dockerfile runs (cargo build --release --locked)
	$(CARGO) build --release --locked -p ecs-operator
	@ls -l $(CARGO_TARGET_DIR)/release/ecs-operator

N ?= 1000
BENCH_ARGS ?=
.PHONY: bench
bench: tools ## Benchmark N EcsServices (N=1000; N=10000 on request): time to Ready, ECS calls, CPU, RSS
	$(CARGO) build --release --locked -p ecs-operator --bin ecs-operator
	@# The harness itself is a debug build: its dev-dependencies would otherwise rebuild
	@# the release operator with other features.
	$(CARGO) build --locked -p ecs-operator --example bench
	$(CARGO_TARGET_DIR)/debug/examples/bench --services $(N) --operator $(CARGO_TARGET_DIR)/release/ecs-operator $(BENCH_ARGS)

.PHONY: docker-lint
docker-lint: venv ## Lint the Dockerfile with hadolint (no Docker engine needed)
	$(VENV)/bin/hadolint Dockerfile && echo "Dockerfile: hadolint clean"

.PHONY: run-check
run-check: ## make run until the samples are Ready, then stop (what CI checks of `make run`)
	@ECS_OPERATOR_RUN_UNTIL_READY=1 CARGO="$(CARGO)" hack/run.sh

.PHONY: run
run: tools ## Run the operator locally: real apiserver + ECS and Auto Scaling endpoints, CRDs, samples (Ctrl-C stops)
	@CARGO="$(CARGO)" hack/run.sh

.PHONY: env-up
env-up: tools ## Start kube-apiserver + etcd + ECS and Auto Scaling endpoints in the background; prints exports
	@$(CARGO) build --quiet --locked -p testenv
	@$(CARGO_TARGET_DIR)/debug/testenv up --detach

.PHONY: env-down
env-down: ## Stop what env-up started
	@if [ -x $(CARGO_TARGET_DIR)/debug/testenv ]; then $(CARGO_TARGET_DIR)/debug/testenv down; else echo "nothing to stop"; fi

.PHONY: clean
clean: ## Remove build output (keeps the apiserver build and the venv)
	$(CARGO) clean
