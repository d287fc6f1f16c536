# skep: `make demo` to see it work, `make test` to test everything.
GO      ?= go
BIN     := bin/skep
BENCH_BIN := bin/skep-bench
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED := 0

BENCHES := sync propagation pods dataplane nodeport

.PHONY: deps build generate openapi helm test fuzz demo demo-down bench bench-build images clean $(BENCHES:%=bench-%)

deps: ## install missing Debian packages, mount bpffs (idempotent)
	@test/lab/install-deps.sh

build: ## the binary every node runs, bin/skep
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/skep

# The benchmarks are a binary of their own so that bin/skep carries none of
# their plotting, LaTeX, PDF and font packages.
bench-build: build ## the benchmarks' binary, bin/skep-bench (it runs bin/skep in its labs)
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BENCH_BIN) ./cmd/skep-bench

# The kernel headers' asm/ lives in the multiarch include directory, named
# by the host's triplet (x86_64-linux-gnu, aarch64-linux-gnu): ask the C
# compiler, or derive it from the machine where there is none.
BPF_MULTIARCH := $(or $(shell gcc -print-multiarch 2>/dev/null),$(shell uname -m)-linux-gnu)

generate: ## rebuild the committed bpf2go output from bpf/*.c (needs clang)
	BPF_CFLAGS="-I/usr/include/$(BPF_MULTIARCH)" $(GO) generate ./bpf/...

openapi: ## rebuild the committed OpenAPI schemas of the served k8s.io/api types (after bumping k8s.io/api)
	$(GO) generate ./controlplane/kubeapi/openapi

# Helm v3 and v4 for test/helm, built from the Go module proxy (newest
# releases it served when this was written). Each version installs into a
# directory of its own, since both binaries are named helm, so bumping a
# version builds the new one and an unchanged one is not rebuilt.
HELM3_VERSION := v3.22.0
HELM4_VERSION := v4.3.2
helm: _out/bin/helm3 _out/bin/helm4 ## Helm v3 and v4 as _out/bin/helm3, _out/bin/helm4 (for test/helm)

# -X: the release's full version for `helm version` (go install leaves
# Helm's major.minor default).
_out/helm/%/helm:
	GOBIN=$(CURDIR)/$(@D) $(GO) install \
		-ldflags "-X helm.sh/helm/$(firstword $(subst ., ,$*))/internal/version.version=$*" \
		helm.sh/helm/$(firstword $(subst ., ,$*))/cmd/helm@$*

_out/bin/helm3: _out/helm/$(HELM3_VERSION)/helm
	@mkdir -p $(@D) && ln -sf $(CURDIR)/$< $@
_out/bin/helm4: _out/helm/$(HELM4_VERSION)/helm
	@mkdir -p $(@D) && ln -sf $(CURDIR)/$< $@

images: build ## the test images as OCI tarballs under _out/images
	$(GO) run ./test/images/build -out $(CURDIR)/_out/images

# staticcheck at a pinned release, built from the Go module proxy.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

test: deps build helm ## every test: unit, BPF, containerd, end to end
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	$(GO) test -p 1 -count=1 -timeout 40m ./...
	$(MAKE) fuzz

# Each fuzz target for FUZZTIME (their seed corpora already ran as tests):
# what parses input from outside the trust boundary.
FUZZTIME ?= 10s
FUZZ := controlplane/apiserver:FuzzDecodeBody controlplane/apiserver:FuzzJoin controlplane/store:FuzzKeyEncoding agent/node:FuzzEndpoint
fuzz: ## run each fuzz target for FUZZTIME (default 10s)
	@set -e; for f in $(FUZZ); do \
		echo "fuzz $${f#*:} in ./$${f%%:*} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${f#*:}$$" -fuzztime $(FUZZTIME) ./$${f%%:*}; \
	done

demo: deps build images ## a 3-node lab, the echo server behind a Service, answers by ClusterIP, NodePort and name
	@test/lab/demo.sh

demo-down: build ## tear down a demo lab left running
	$(BIN) lab down --name demo

bench: deps build ## the Go micro-benchmarks (make bench-<name> for the reports)
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 3x ./controlplane/... ./agent/...

# skep-bench <name> with its defaults, report under _out/bench: make bench-sync, bench-dataplane, ...
$(BENCHES:%=bench-%): bench-%: deps bench-build images
	$(BENCH_BIN) $* --out _out/bench

clean:
	rm -rf bin _out
