# Thin wrapper over CMake: `make run` and `make test` are all a user needs.
BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_FUZZ ?= build-fuzz
# Seconds per fuzz target: short in `make test`, longer with `make fuzz`.
FUZZ_TIME  ?= 10
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=
PLANT      ?=

C_SOURCES = $(shell find runtime drivers stdlib tests -name '*.[ch]' 2>/dev/null)
LUA_SOURCES = $(shell find stdlib twins examples tests -name '*.lua' 2>/dev/null)

.PHONY: all deps build build-san build-fuzz run test test-unit test-san test-fuzz fuzz check-format format lint bench clean

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

test: check-format lint test-unit test-san test-fuzz
	@echo "make test: all passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-san: build-san
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

build-fuzz: deps
	@CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DDP_FUZZ=ON -DDP_TESTS=OFF >/dev/null
	@cmake --build $(BUILD_FUZZ) -j $(JOBS) --target fuzz

# Each target runs FUZZ_TIME seconds from its seed corpus (tests/fuzz/corpus/NAME)
# plus what earlier runs found (BUILD_FUZZ/corpus/NAME).
test-fuzz: build-fuzz
	@for src in tests/fuzz/fuzz_*.c; do n=$$(basename $$src .c); \
		mkdir -p $(BUILD_FUZZ)/corpus/$$n $(BUILD_FUZZ)/logs tests/fuzz/corpus/$$n; \
		echo "== $$n ($(FUZZ_TIME) s)"; \
		$(BUILD_FUZZ)/$$n -max_total_time=$(FUZZ_TIME) -print_final_stats=0 \
			$(BUILD_FUZZ)/corpus/$$n tests/fuzz/corpus/$$n 2>$(BUILD_FUZZ)/logs/$$n.log \
			|| { tail -40 $(BUILD_FUZZ)/logs/$$n.log; exit 1; }; \
		grep -E "^#[0-9]+.*DONE" $(BUILD_FUZZ)/logs/$$n.log | tail -1; \
	done

fuzz:
	@$(MAKE) --no-print-directory test-fuzz FUZZ_TIME=600

check-format: deps
	@clang-format --dry-run --Werror $(C_SOURCES)
	@echo "clang-format: ok"

format:
	clang-format -i $(C_SOURCES)

lint: deps
	@luacheck -q --config .luacheckrc $(LUA_SOURCES)
	@! grep -n '\.timeout *=' tests/unit/*.c || \
		{ echo "tests/unit: no per-test .timeout (Criterion 2.4.1 leaks under LeakSanitizer); ctest sets --timeout"; exit 1; }

bench: build
	@for b in $(BUILD)/bench_*; do echo "== $$b"; ./$$b || exit 1; done

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ)

# Public benchmarks (data in ../shared/data, see docs/benchmarks.md).
.PHONY: bench-nab bench-cmapss
bench-nab: build
	@rm -rf $(BUILD)/nab-reference && mkdir -p $(BUILD)/nab-reference
	@tar xzf ../shared/data/nab/reference/numenta_results.tar.gz -C $(BUILD)/nab-reference
	@echo "== NAB scorer check (published Numenta HTM: 70.10 / 63.1-63.2 / 74.32)"
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_nab --reference $(BUILD)/nab-reference/numenta
	@echo "== NAB with doppel.detect (tests/bench/nab_detector.lua)"
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_nab --detector tests/bench/nab_detector.lua

bench-cmapss: build
	@DP_SOURCE_DIR=$(CURDIR) ./$(BUILD)/bench_cmapss
