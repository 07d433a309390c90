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

# libFuzzer (clang, ASan + UBSan) on the loaders, the spec parser, the
# virtqueue parser and every device's register file: FUZZ_SECONDS each
# (default 60), from the seed corpora in tests/fuzz/corpus (docs/fuzzing.md).
FUZZ_SECONDS ?= 60
FUZZERS = loaders spec virtqueue snapshot migration uart i8042 rtc acpi_pm fw_cfg pci_host pc_testdev virtio_blk virtio_rng virtio_net
fuzz:
	@scripts/setup-deps.sh
	apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev >/dev/null
	CC=clang CXX=clang++ cmake -S . -B build-fuzz -DAPIARY_FUZZ=ON -DAPIARY_BUILD_BENCH=OFF
	cmake --build build-fuzz -j $(JOBS) --target $(addprefix fuzz_,$(FUZZERS))
	mkdir -p build-fuzz/corpus/loaders build-fuzz/corpus/spec
	cp examples/*.json build-fuzz/corpus/spec/
	cp build/guest/*.elf build/guest/*.mb build/guest/*.bzimage build-fuzz/corpus/loaders/ 2>/dev/null || true
	set -e; for f in $(FUZZERS); do \
	  mkdir -p build-fuzz/corpus/$$f; \
	  if [ -d tests/fuzz/corpus/$$f ]; then cp tests/fuzz/corpus/$$f/* build-fuzz/corpus/$$f/; fi; \
	  s=0; build-fuzz/tests/fuzz/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=build-fuzz/crash-$$f- build-fuzz/corpus/$$f > build-fuzz/fuzz_$$f.log 2>&1 || s=$$?; \
	  tail -n 12 build-fuzz/fuzz_$$f.log; \
	  if [ $$s -ne 0 ]; then echo "fuzz_$$f found a failure (status $$s); input in build-fuzz/crash-$$f-*"; exit 1; fi; \
	done

clean:
	rm -rf $(BUILD) $(SAN_BUILD) build-fuzz
