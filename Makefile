# Convenience wrapper around CMake/CTest. Every target installs missing
# Debian packages first (scripts/install-deps.sh), so it works on a fresh
# machine.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

PREFIX     ?= /usr/local

.PHONY: all deps build test test-asan bench bench-torch demo install clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS) >/dev/null

build: deps $(BUILD)/CMakeCache.txt
	@cmake --build $(BUILD) -j $(JOBS) -- --no-print-directory

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt: | deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEFT_SANITIZE=ON $(CMAKE_ARGS) >/dev/null

test-asan: deps $(ASAN_BUILD)/CMakeCache.txt
	@cmake --build $(ASAN_BUILD) -j $(JOBS) -- --no-print-directory
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

demo: build
	@scripts/demo.sh

# Installs the library, header, CLI, pkg-config file, CMake package and the
# Python package under $(PREFIX) (see README, "Using the library from C").
install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

bench: build
	@$(BUILD)/bench_compress
	@$(BUILD)/bench_optim
	@$(BUILD)/bench_train
	@$(BUILD)/bench_convs

# deft.torch's step against torch.optim.SGD and deft's C step (ResNet-18),
# deft's models against their PyTorch twins (images/s, one thread), and one
# preresnet20 epoch of deft train against the pure-PyTorch trainer (~5 min).
bench-torch: build
	@/usr/bin/python3 bench/bench_torch.py
	@bench/bench_models.sh
	@bench/bench_epoch.sh

# MPI allreduce benchmark for K = 2, 4, 8 ranks (oversubscribed on small
# machines); bench_allreduce is built only when CMake finds MPI.
.PHONY: bench-mpi
bench-mpi: build
	@scripts/bench-mpi.sh $(BUILD)/bench_allreduce 2 4 8

# libFuzzer targets (tests/fuzz), FUZZ_SECONDS each, ASan + UBSan; built
# with Debian's clang into build-fuzz.
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 300
FUZZ_TARGETS  = idx libsvm checkpoint optim_state cli
.PHONY: fuzz
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DDEFT_FUZZ=ON -DDEFT_MPI=OFF -DDEFT_WERROR=OFF $(CMAKE_ARGS) >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS)) -- --no-print-directory
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The virtual cluster (root): deft vs PyTorch DDP, and the fault tests.
.PHONY: bench-cluster cluster-faults
bench-cluster: build
	@bench/cluster_bench.sh --model lenet --epochs 4 --gbps "1 10"

cluster-faults: build
	@DEFT=$(BUILD)/deft scripts/cluster.sh faults

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
