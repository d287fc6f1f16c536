# skep: `make demo` to see it work, `make test` to test everything.
GO      ?= go
BIN     := bin/skep
BENCH_BIN := bin/skep-bench
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
export CGO_ENABLED := 0

BENCHES := sync propagation pods dataplane nodeport

.PHONY: deps build generate openapi test fuzz demo demo-down bench bench-build images clean $(BENCHES:%=bench-%)

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

images: build ## the test images as OCI tarballs under _out/images
	$(GO) run ./test/images/build -out $(CURDIR)/_out/images

test: deps build ## every test: unit, BPF, containerd, end to end
	$(GO) vet ./...
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
