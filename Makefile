# Apiary's front door. `make run` and `make test` each set up everything they
# need on a fresh Debian bookworm machine (packages, configure, build).
BUILD ?= build
SAN_BUILD ?= build-asan
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all setup configure build run test test-unit test-kvm asan bench fuzz clean

all: build

setup:
	@scripts/setup-deps.sh

$(BUILD)/CMakeCache.txt:
	@scripts/setup-deps.sh
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Boots the embedded demo guest with its console on this terminal: natively
# where /dev/kvm is usable, otherwise in a nested-KVM VM (scripts/kvm-vm says
# so once on stderr). Status 1 is the guest's debug exit with value 0
# ((0 << 1) | 1) and 10 a detach (Ctrl-]): both are a clean end.
run: build
	scripts/kvm-vm -- $(BUILD)/apps/apiary run || { s=$$?; [ $$s -eq 1 ] || [ $$s -eq 10 ]; }

# The whole suite, through ctest (what CI runs). A failed test runs once
# more and fails the suite only if it fails again; both runs' output stays in
# the log (see docs/kvm-vm.md, "Watchdogs and reruns", for why).
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --repeat until-pass:2

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

test-kvm: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L kvm

# Unit and KVM tests under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	@scripts/setup-deps.sh
	cmake -S . -B $(SAN_BUILD) -DAPIARY_SANITIZE=ON -DAPIARY_BUILD_BENCH=OFF $(CMAKE_FLAGS)
	cmake --build $(SAN_BUILD) -j $(JOBS)
	cd $(SAN_BUILD) && ctest --output-on-failure -j $(JOBS) -L 'unit|kvm'

bench: build
	cmake --build $(BUILD) -j $(JOBS) --target apiary_benchmarks
	scripts/run-benchmarks.sh $(BUILD)

# libFuzzer on the loaders and the spec parser (clang), 60 s each.
fuzz:
	@scripts/setup-deps.sh
	apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DAPIARY_FUZZ=ON -DAPIARY_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target fuzz_loaders fuzz_spec
	mkdir -p build-fuzz/corpus/loaders build-fuzz/corpus/spec
	cp build/guest/*.elf build/guest/*.mb build/guest/*.bzimage build-fuzz/corpus/loaders/ 2>/dev/null || true
	cp examples/*.json build-fuzz/corpus/spec/
	build-fuzz/tests/fuzz/fuzz_loaders -max_total_time=60 build-fuzz/corpus/loaders
	build-fuzz/tests/fuzz/fuzz_spec -max_total_time=60 build-fuzz/corpus/spec

clean:
	rm -rf $(BUILD) $(SAN_BUILD) build-fuzz
