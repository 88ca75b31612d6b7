# Sluice — `make help` lists the targets.
# The two set-up commands are `make run` and `make test`; both install what
# they need (dev/install.sh) and start what they need (dev/up.sh).

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Every Go module of the workspace, in dependency order.
MODULES := proto pkg services/ingest services/sender services/logwriter loadtest dev/images charts/test
CACHE := $(shell bash dev/env.sh | sed -n 's/^SLUICE_CACHE=//p')
TOOLS := $(CACHE)/bin
# Whole-suite bound: the suite runs in a few minutes; a hung test fails
# here rather than at CI's limit.
TEST_TIMEOUT ?= 10m

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install what the build and the dev stack need (idempotent)
	@bash dev/install.sh

.PHONY: run
run: deps ## start Kafka, ClickHouse, the services and the demo; Ctrl-C stops all
	@bash dev/run.sh

.PHONY: test
test: deps check-generated lint ## everything: generated code, lint, then all tests on real Kafka and ClickHouse
	@bash dev/with-stack.sh $(MAKE) --no-print-directory test-go

# Each module is tested alone (GOWORK=off), which also proves it builds
# without the workspace. The modules of SIDE_MODULES are tested beside the
# others, not after them: most of their cost is compiling (Helm, the
# Kubernetes and Prometheus packages, the images' binaries), CPU that
# overlaps the other modules' waits on Kafka. On an empty build cache (CI's
# fresh machine) that took make test from 15.1 to 14.0 minutes on the
# 2-core machine; warm, it takes about 8. Their output is printed when both
# groups are done.
SIDE_MODULES := dev/images charts/test
MAIN_MODULES := $(filter-out $(SIDE_MODULES),$(MODULES))
.PHONY: test-go
test-go:
	@side_log=$$(mktemp); \
	( for m in $(SIDE_MODULES); do \
	    echo "== go test $$m"; \
	    (cd $$m && GOWORK=off go test -count=1 -timeout $(TEST_TIMEOUT) ./...) || exit 1; \
	  done ) > "$$side_log" 2>&1 & side=$$!; \
	status=0; \
	for m in $(MAIN_MODULES); do \
	  echo "== go test $$m"; \
	  (cd $$m && GOWORK=off go test -count=1 -timeout $(TEST_TIMEOUT) ./...) || { status=1; break; }; \
	done; \
	wait $$side || status=1; \
	cat "$$side_log"; rm -f "$$side_log"; \
	exit $$status

.PHONY: test-short
test-short: ## unit tests only: no Kafka, no ClickHouse
	@for m in $(MODULES); do (cd $$m && go test -short -count=1 ./...) || exit 1; done

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME (default 20s) each
	@bash dev/fuzz.sh $(MODULES)

.PHONY: bench
bench: deps ## Go micro-benchmarks of the hot paths, then the load test (P0-P7), written to docs/benchmarks.md
	@for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchmem ./...) || exit 1; done
	@dev/with-stack.sh go run ./loadtest/cmd/sluice-bench -doc docs/benchmarks.md

.PHONY: bench-quick
bench-quick: deps ## the load test's short run (P0-P7, smaller), report in loadtest/results/
	@dev/with-stack.sh go run ./loadtest/cmd/sluice-bench -quick

.PHONY: chaos
chaos: deps ## the fault suite under load on a stack of its own (kill -9, broker, ClickHouse, flapping receivers); report in docs/reliability.md
	@bash dev/chaos.sh

.PHONY: lint
lint: deps ## gofmt, go vet and staticcheck over every module
	@unformatted=$$(gofmt -l $(MODULES) | grep -v '\.pb\.go$$' || true); \
	  if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	@for m in $(MODULES); do \
	  (cd $$m && go vet ./... && $(TOOLS)/staticcheck ./...) || exit 1; \
	done

.PHONY: generate
generate: deps ## regenerate the protobuf Go code in proto/
	@cd proto && PATH="$(TOOLS):$$PATH" protoc --go_out=. --go_opt=paths=source_relative sluice/v1/*.proto

.PHONY: check-generated
check-generated: generate ## fail if the committed generated code is stale
	@git diff --exit-code -- proto/ || { echo "proto/: generated code is stale; run make generate and commit"; exit 1; }

.PHONY: tidy
tidy: ## go mod tidy in every module
	@for m in $(MODULES); do (cd $$m && go mod tidy); done

.PHONY: dev-up
dev-up: ## start the dev stack (Kafka, ClickHouse) and create the topics
	@bash dev/up.sh

.PHONY: dev-down
dev-down: ## stop the dev stack (data is kept)
	@bash dev/down.sh

.PHONY: dev-clean
dev-clean: dev-down ## stop the dev stack and delete its data
	@rm -rf "$$(bash dev/env.sh | sed -n 's/^SLUICE_DEV_STATE=//p')"

# Container images (dev/images): one per binary, built with buildah; the
# image test (dev/images, in MODULES) builds them the same way.
.PHONY: images
images: deps ## build the container images with buildah and print their sizes (SLUICE_IMAGE_VERSION, _REPO, _ARCHS)
	@bash dev/images/build.sh
