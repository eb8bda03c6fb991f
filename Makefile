# ms2m — live migration of stateful, Kafka-driven pods.
# `make help` lists the targets.

GO              ?= go
BIN             := $(CURDIR)/bin
CONTROLLER_GEN  := $(BIN)/controller-gen
CONTROLLER_GEN_VERSION := v0.23.0
CRD_DIR         := charts/ms2m/crds
RBAC_DIR        := config/rbac
WEBHOOK_DIR     := config/webhook
CHART_GEN_DIR   := charts/ms2m/templates/generated
GENERATED       := $(shell find pkg/apis -name zz_generated.deepcopy.go) $(CRD_DIR) $(RBAC_DIR) $(WEBHOOK_DIR) $(CHART_GEN_DIR)
# The test command: builds the control plane into the cache when it is
# missing (about 7 minutes cold on 2 cores), then runs every test tier.
TEST_FLAGS      ?= -count=1 -timeout 60m
PKGS            ?= ./...

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-16s %s\n",$$1,$$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build every binary into bin/, the kubectl-ms2m plugin included.
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/...

.PHONY: control-plane
control-plane: ## Build kube-apiserver, controller-manager, scheduler and etcd into the cache.
	@hack/build-control-plane.sh >/dev/null

.PHONY: test
test: control-plane ## Run unit, integration (real apiserver) and e2e tests.
	KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" $(GO) test $(TEST_FLAGS) $(PKGS)

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy, CRDs, RBAC and webhook configuration (markers, then webhooks.Scopes) and their copies in the chart.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./pkg/apis/...
	$(CONTROLLER_GEN) crd paths=./pkg/apis/... output:crd:artifacts:config=$(CRD_DIR)
	$(CONTROLLER_GEN) webhook paths=./webhooks/... output:webhook:artifacts:config=$(WEBHOOK_DIR)
	$(GO) run ./hack/webhook-scope $(WEBHOOK_DIR)/manifests.yaml
	$(CONTROLLER_GEN) rbac:roleName=ms2m-manager paths=./pkg/controllers/... paths=./pkg/manager/... paths=./webhooks/... paths=./scheduler/... output:rbac:artifacts:config=$(RBAC_DIR)/manager
	$(CONTROLLER_GEN) rbac:roleName=ms2m-agent paths=./pkg/agent/... output:rbac:artifacts:config=$(RBAC_DIR)/agent
	hack/chart-generate.sh

.PHONY: verify
verify: generate lint ## Fail when generated files are stale or code is not clean.
	@if [ -n "$$(git status --porcelain -- $(GENERATED))" ]; then \
	  echo "generated files are stale; run 'make generate' and commit:"; \
	  git status --porcelain -- $(GENERATED); git --no-pager diff --stat -- $(GENERATED); exit 1; fi
	@echo "verify: generated files are up to date"

.PHONY: lint
lint: ## gofmt and go vet.
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: demo
demo: build control-plane ## The main job: a sandbox cluster, the example workload under load, the zero-loss verdict.
	$(BIN)/ms2m-sandbox demo $(DEMO_FLAGS)

.PHONY: sandbox-up
sandbox-up: build control-plane ## Start the sandbox in the background (ms2m-sandbox up); `kubectl` it with the printed KUBECONFIG.
	$(BIN)/ms2m-sandbox up $(SANDBOX_FLAGS)

.PHONY: sandbox-down
sandbox-down: ## Stop the sandbox and every process it started.
	@if [ -x $(BIN)/ms2m-sandbox ]; then $(BIN)/ms2m-sandbox down $(SANDBOX_FLAGS); else $(GO) run ./cmd/ms2m-sandbox down $(SANDBOX_FLAGS); fi

.PHONY: run
run: ## Run the manager against the current kubeconfig.
	$(GO) run ./cmd/ms2m-manager

$(CONTROLLER_GEN):
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)

IMG ?= ms2m:dev
.PHONY: docker-build
docker-build: ## Build the image where a Docker engine runs; skipped, saying so, where none does.
	@if docker info >/dev/null 2>&1; then docker build -t $(IMG) .; \
	  else echo "docker-build: no Docker engine here; skipped (no image is needed for the tests)"; fi

.PHONY: bench
bench: bench-micro bench-migration bench-memory bench-drain ## Every benchmark: micro-benchmarks, the sandbox migration benchmark (regenerates docs/benchmarks.md), the checkpoint's cost against memory, the drain of a node with 50 migratable pods.

# Only the packages that have benchmarks: others' TestMain (e2e starts a
# whole sandbox) need not run for -run '^$$'.
# The drain benchmark (test/e2e) has its own target, bench-drain.
BENCH_PKGS      ?= $(shell grep -rl --include='*_test.go' '^func Benchmark' . | xargs -n1 dirname | grep -v '^./test/e2e$$' | sort -u)

# Keeps what benchstat reads, and rejoins a result line that a benchmark's
# own log output split (name on one line, figures on a later one).
BENCH_CLEAN     := /^(goos|goarch|pkg|cpu):/ {print; next} \
	/^Benchmark/ {if ($$2 ~ /^[0-9]+$$/) print; else name=$$1; next} \
	/^[ \t]+[0-9]+[ \t]/ && /ns\/op/ && name != "" {print name $$0; name=""}

.PHONY: bench-micro
bench-micro: control-plane ## Micro-benchmarks (benchstat-friendly), with the real apiserver where a package needs it; output in docs/benchmarks/micro.txt.
	@mkdir -p docs/benchmarks $(BIN)/bench
	KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" $(GO) test -run '^$$' -bench . -benchmem -count 5 $(BENCH_PKGS) >$(BIN)/bench/micro-raw.txt; \
	  rc=$$?; cat $(BIN)/bench/micro-raw.txt; \
	  awk '$(BENCH_CLEAN)' $(BIN)/bench/micro-raw.txt >docs/benchmarks/micro.txt; exit $$rc

.PHONY: bench-memory
bench-memory: control-plane ## Checkpoint cost against the app's memory (16/64/256 MiB): the simulated dump and a migration per size; output in docs/benchmarks/memory.txt, rendered on docs/benchmarks.md.
	@mkdir -p docs/benchmarks
	{ $(GO) test ./pkg/simcriu -run '^$$' -bench DumpPages -count 3 && \
	  KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" $(GO) test ./test/e2e -run '^$$' -bench MigrationByMemory -benchtime 1x -v -timeout 30m; } >docs/benchmarks/memory.txt; \
	  rc=$$?; cat docs/benchmarks/memory.txt; $(GO) run ./test/bench --report-only; exit $$rc

.PHONY: bench-drain
bench-drain: control-plane ## kubectl drain of a sandbox node holding 50 migratable pods (E2E_DRAIN_PODS), per-node limit 5 (docs/drain.md).
	KUBEBUILDER_ASSETS="$$(hack/build-control-plane.sh)" $(GO) test ./test/e2e -run '^$$' -bench DrainNode -benchtime 1x -timeout 40m

.PHONY: bench-migration
bench-migration: build control-plane ## MS2M vs stop-and-copy and restart-and-rebuild across message rates, plus the cutoff regime, in the sandbox (~75 min with the default 5 runs; BENCH_FLAGS='--runs 2' ~30 min, '--rates 10,120 --runs 1' a quick look): docs/benchmarks.md, its CSV and plot.
	$(GO) run ./test/bench --bin-dir $(BIN) $(BENCH_FLAGS)
