# The README's two commands: `make demo` and `make test`. Both install what is missing first.
.PHONY: all deps build asan test demo bench clean help

DURATION ?= 0

all: build

help:
	@echo "make demo   install deps, build, run the demo (DURATION=<seconds> to stop by itself)"
	@echo "make test   install deps, build (default + asan presets), run every test"
	@echo "make bench  release build and benchmarks (not part of make test)"

deps:
	deploy/install-deps.sh

build: deps
	cmake --preset default
	cmake --build --preset default

asan: deps
	cmake --preset asan
	cmake --build --preset asan

test: build asan
	ctest --preset default
	ctest --preset asan

demo: build
	deploy/demo.sh --duration=$(DURATION)

bench: deps
	cmake --preset release
	cmake --build --preset release
	deploy/bench.sh build-release

clean:
	rm -rf build build-asan build-release
