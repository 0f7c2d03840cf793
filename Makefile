# bpfman: `make demo` and `make test` each install whatever is missing first.
SHELL := /bin/bash
VENV := .venv
CLANG ?= clang
ARCH_INC := /usr/include/$(shell uname -m)-linux-gnu
BPF_CFLAGS := -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(ARCH_INC)

BPF_SRCS := $(shell find manifests tests bench reconciler -name '*.bpf.c' 2>/dev/null)
BPF_OBJS := $(BPF_SRCS:.bpf.c=.o)
# The dispatchers bpfman loads itself are part of the product, not just of the tests.
DISPATCHER_OBJS := $(patsubst %.bpf.c,%.o,$(wildcard reconciler/kernel/dispatchers/*.bpf.c))

.PHONY: install bytecode test vm demo lint bench clean docs-graph

install: $(VENV)/.bpfman-installed $(DISPATCHER_OBJS)
$(VENV)/.bpfman-installed: pyproject.toml scripts/install-deps.sh
	@scripts/install-deps.sh

# A user-space binary the uprobe tests probe (and read the symbols of).
TEST_BINS := tests/bpf/uprobe_target

bytecode: install $(BPF_OBJS) $(TEST_BINS)

tests/bpf/uprobe_target: tests/bpf/uprobe_target.c
	$(CC) -O0 -g -o $@ $<

%.o: %.bpf.c | $(VENV)/.bpfman-installed
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(filter tests/vm/bpf/%,$(BPF_OBJS)): $(wildcard tests/vm/bpf/*.h)
# The second release of the tracepoint counter is the first, compiled with another STEP.
tests/bpf/tracepoint_counter_v2.o: tests/bpf/tracepoint_counter.bpf.c

test: bytecode
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# Only prepare the VM tier's kernel and initramfs (cached; `make test` does it when needed).
vm: install
	$(VENV)/bin/python scripts/vm/vm.py prepare

demo: bytecode
	@scripts/demo.sh

# docs/graph-example.svg: `bpfman graph` of docs/graph-example (docs/cli.md). Needs root, as any
# plan does (it observes the kernel under a throwaway bpffs root; nothing is loaded) and
# graphviz's `dot`. Drawn from a copy outside git, so that no revision stamps the picture.
docs-graph: bytecode
	@command -v dot >/dev/null || { echo "docs-graph: graphviz's dot is missing (make install)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	mkdir -p "$$tmp/docs" "$$tmp/manifests/examples" "$$tmp/state" && \
	cp -r docs/graph-example "$$tmp/docs/" && \
	cp -r manifests/examples/bytecode "$$tmp/manifests/examples/" && \
	(cd "$$tmp" && $(CURDIR)/$(VENV)/bin/bpfman --bpffs-root /sys/fs/bpf/bpfman-docs-graph-$$$$ \
		--state-dir "$$tmp/state" graph . --path docs/graph-example) >"$$tmp/graph.dot" && \
	dot -Tsvg "$$tmp/graph.dot" >docs/graph-example.svg
	@echo "docs-graph: wrote docs/graph-example.svg"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy reconciler
	$(VENV)/bin/lint-imports

bench: bytecode
	$(MAKE) -C bench
	$(VENV)/bin/python bench/bench.py

clean:
	rm -f $(BPF_OBJS) $(TEST_BINS)
	$(MAKE) -C bench clean 2>/dev/null || true
