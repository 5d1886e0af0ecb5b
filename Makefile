# The README's two commands: `make demo` and `make test`. Both install what is missing first.
.PHONY: all deps cross-deps build asan arm64 test demo bench clean help

DURATION ?= 0

all: build

help:
	@echo "make demo   install deps, build, run the demo (DURATION=<seconds> to stop by itself)"
	@echo "make test   install deps, build (default + asan + arm64 presets), run every test"
	@echo "make arm64  cross-build the shim and agent for arm64 (docs/arm64.md)"
	@echo "make bench  release build and benchmarks (not part of make test)"

deps:
	deploy/install-deps.sh

build: deps
	cmake --preset default
	cmake --build --preset default

asan: deps
	cmake --preset asan
	cmake --build --preset asan

# Serialised after deps: both scripts may run apt-get.
cross-deps: deps
	deploy/install-cross-deps.sh

# The shim and the agent for arm64; their unit tests run under qemu-aarch64-static (docs/arm64.md).
arm64: cross-deps
	cmake --preset arm64
	cmake --build --preset arm64

test: build asan arm64
	ctest --preset default
	ctest --preset asan
	ctest --preset arm64

demo: build
	deploy/demo.sh --duration=$(DURATION)

bench: deps
	cmake --preset release
	cmake --build --preset release
	deploy/bench.sh build-release

clean:
	rm -rf build build-asan build-release build-arm64
