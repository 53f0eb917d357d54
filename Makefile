# Thin wrapper over CMake: `make run` and `make test` are all a user needs.
BUILD      ?= build
BUILD_SAN  ?= build-san
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
PLANT      ?=

C_SOURCES = $(shell find runtime drivers stdlib tests -name '*.[ch]' 2>/dev/null)
LUA_SOURCES = $(shell find stdlib twins examples tests -name '*.lua' 2>/dev/null)

.PHONY: all deps build build-san run test test-unit test-san check-format format lint bench clean

all: build

deps:
	@sh .ci/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-san: deps
	@cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DDP_ASAN=ON -DDP_UBSAN=ON $(CMAKE_ARGS) >/dev/null
	@cmake --build $(BUILD_SAN) -j $(JOBS)

run: build
	./$(BUILD)/doppel run $(PLANT)

test: check-format lint test-unit test-san
	@echo "make test: all passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-san: build-san
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

check-format: deps
	@clang-format --dry-run --Werror $(C_SOURCES)
	@echo "clang-format: ok"

format:
	clang-format -i $(C_SOURCES)

lint: deps
	@luacheck -q --config .luacheckrc $(LUA_SOURCES)

bench: build
	@for b in $(BUILD)/bench_*; do echo "== $$b"; ./$$b || exit 1; done

clean:
	rm -rf $(BUILD) $(BUILD_SAN)

# Public benchmarks (data in ../shared/data, see docs/benchmarks.md).
.PHONY: bench-nab bench-cmapss
bench-nab: build
	@rm -rf $(BUILD)/nab-reference && mkdir -p $(BUILD)/nab-reference
	@tar xzf ../shared/data/nab/reference/numenta_results.tar.gz -C $(BUILD)/nab-reference
	@echo "== NAB scorer check (published Numenta HTM: 70.10 / 63.1-63.2 / 74.32)"
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_nab --reference $(BUILD)/nab-reference/numenta
	@echo "== NAB with doppel.detect (tests/bench/nab_detector.lua)"
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_nab

bench-cmapss: build
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_cmapss
