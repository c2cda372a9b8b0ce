# team-operator developer entry points. Keep targets grouped by area; see README.md.
SHELL := /bin/bash

.PHONY: help setup binaries images stack-up stack-down stack-status test

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# --- local stack and tests -------------------------------------------------------------------

setup: ## install what the stack and the tests need (apt, pip, npm; idempotent, fast when done)
	hack/setup.sh

binaries: ## build the control plane (+ kubelet, kube-proxy, containerd, runc, CNI, CoreDNS unless NODE=0; cached)
	hack/build-binaries.sh

images: ## OCI images (pause, agent, agent-root, redis, project, opencode, claude, codex) written here and imported into the node's containerd
	source hack/lib.sh && cargo build --bins && hack/images.sh

stack-up: binaries ## start the local stack (idempotent); then: eval "$$(hack/stack.sh env)"
	hack/stack.sh up

stack-down: ## stop the local stack
	hack/stack.sh down

stack-status: ## health of each stack component
	hack/stack.sh status

test: ## all cargo tests against the local stack, then the Redis suites again on a Redis Cluster (starts/stops what was not up)
	hack/test.sh

# --- benchmarks ------------------------------------------------------------------------------

.PHONY: bench bench-svg
bench: ## P1–P5 benchmarks on the running stack; table + bench/results/latest.json and .svg (BENCH_ARGS=--quick)
	source hack/lib.sh && cargo bench --bench fleet -- $(BENCH_ARGS)

bench-svg: ## redraw bench/results/latest.svg and the JSON's table from bench/results/latest.json (no stack needed)
	source hack/lib.sh && cargo bench --bench fleet -- --svg

# --- Helm chart ------------------------------------------------------------------------------

.PHONY: chart-test
chart-test: ## lint, dry-run, install and RBAC tests of charts/team-operator on the running stack
	source hack/lib.sh && eval "$$(hack/stack.sh env)" && cargo test --test chart

# --- demo ------------------------------------------------------------------------------------

.PHONY: demo demo-down

demo: ## a spec-review team at work in real containers on the local stack's node (the Helm chart installs the operator)
	hack/demo.sh

demo-down: ## uninstall the demo's release and delete namespace demo (not the stack)
	hack/demo.sh down
