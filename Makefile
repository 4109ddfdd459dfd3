# gmoe: one Makefile. `make` builds $(BUILD)/gmoe; `make test` installs what is missing
# (make deps), builds and runs the TAP suite with prove; `make test-cluster` runs sweeps on a
# private one-node Slurm and GNU parallel; `make figures QUICK=1` runs the experiments' quick
# presets and renders their figures; `make asan test` uses ASan/UBSan.

BUILD      ?= build
CC         ?= cc
PKG_CONFIG ?= pkg-config
WERROR     ?= 0
QUICK      ?= 0
OPT        ?= -O3 -march=native
PROVE_JOBS ?= 2

# Sanitizer build: `make asan test` builds in build-asan with ASan and UBSan.
SAN ?= 0
ifneq ($(filter asan,$(MAKECMDGOALS)),)
SAN := 1
endif
ifeq ($(SAN),1)
BUILD  := build-asan
OPT    := -O1 -fno-omit-frame-pointer
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined
export ASAN_OPTIONS ?= detect_leaks=1
export LSAN_OPTIONS ?= suppressions=$(CURDIR)/tests/lsan.supp
# sanitized runs are 3-5x slower: tap.run's per-run limit (tests/tap.lua) grows with them
export GMOE_TEST_TIMEOUT ?= 480
endif

# ---- system packages, through pkg-config (names probed; override LUA_PC / BLAS_PC) --------
pc_first = $(firstword $(foreach p,$(1),$(if $(shell $(PKG_CONFIG) --exists $(p) 2>/dev/null && echo y),$(p))))
LUA_PC  ?= $(call pc_first,lua5.4 lua-5.4 lua54)
BLAS_PC ?= $(call pc_first,openblas)
RL_PC   ?= $(call pc_first,readline)
ZMQ_PC  ?= $(call pc_first,libzmq)
SSL_PC  ?= $(call pc_first,libcrypto)
PKG_CFLAGS := $(if $(LUA_PC),$(shell $(PKG_CONFIG) --cflags $(LUA_PC) $(BLAS_PC) $(RL_PC) $(ZMQ_PC) $(SSL_PC)))
PKG_LIBS   := $(if $(LUA_PC),$(shell $(PKG_CONFIG) --libs $(LUA_PC) $(BLAS_PC) $(RL_PC) $(ZMQ_PC) $(SSL_PC)))

WARN := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wpointer-arith \
        -Wformat=2 -Wno-unused-parameter
ifeq ($(WERROR),1)
WARN += -Werror
endif
CFLAGS_ALL = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(OPT) -g -fopenmp -fno-math-errno \
             $(WARN) $(SANFLAGS) -Icore -Ilua $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -fopenmp -pthread -lm $(SANFLAGS) $(LDFLAGS) $(LDLIBS)

# ---- CUDA: built when nvcc is found and kernels/cuda has sources --------------------------
NVCC     ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
ifeq ($(MAKELEVEL),0)
say = $(info $(1))
endif
ifeq ($(NVCC),)
$(call say,nvcc: not found; CPU-only build)
else ifeq ($(CUDA_SRC),)
$(call say,nvcc: found at $(NVCC); CUDA backend has no kernels yet, CPU-only build)
else
$(call say,nvcc: found at $(NVCC); building the CUDA backend)
CUDA_OBJ := $(CUDA_SRC:%.cu=$(BUILD)/%.o)
CFLAGS_ALL += -DGM_WITH_CUDA
LDLIBS_ALL += -L$(dir $(NVCC))../lib64 -lcudart -lcublas
endif

# ---- sources ------------------------------------------------------------------------------
CORE_SRC   := $(wildcard core/*.c core/ops/*.c)
KERNEL_SRC := $(wildcard kernels/cpu/*.c)
LUA_SRC    := $(wildcard lua/*.c)
LUA_MODS   := $(wildcard lua/gmoe/*.lua lua/gmoe/*/*.lua)
OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CORE_SRC) $(KERNEL_SRC) $(LUA_SRC)) $(BUILD)/lua_embed.o \
       $(CUDA_OBJ)
ENGINE_OBJ := $(filter-out $(BUILD)/lua/%,$(OBJ))
HEADERS := $(wildcard core/*.h core/*.def core/ops/*.h core/ops/*.def kernels/*/*.h lua/*.h)
C_TESTS := $(patsubst tests/c/%.c,$(BUILD)/tests/%,$(wildcard tests/c/t_*.c))

.PHONY: all deps check-deps test test-cluster bench figures clean asan
all: $(BUILD)/gmoe

$(BUILD)/.configured:
	@missing=""; \
	[ -n "$(LUA_PC)" ] || missing="$$missing lua5.4 (Debian package liblua5.4-dev)"; \
	[ -n "$(BLAS_PC)" ] || missing="$$missing openblas (Debian package libopenblas-dev)"; \
	[ -n "$(RL_PC)" ] || missing="$$missing readline (Debian package libreadline-dev)"; \
	[ -n "$(ZMQ_PC)" ] || missing="$$missing libzmq (Debian package libzmq3-dev)"; \
	[ -n "$(SSL_PC)" ] || missing="$$missing libcrypto (Debian package libssl-dev)"; \
	if [ -n "$$missing" ]; then echo "gmoe: missing:$$missing; run 'make deps'" >&2; exit 1; fi
	@mkdir -p $(@D) && touch $@

$(BUILD)/%.o: %.c $(HEADERS) | $(BUILD)/.configured
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/%.o: %.cu $(HEADERS)
	@mkdir -p $(@D)
	$(NVCC) -O2 -Icore -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 -c $< -o $@

# Embed lua/gmoe/*.lua into the executable: module gmoe.<file> (init.lua is `gmoe`).
$(BUILD)/lua_embed.S: $(LUA_MODS) Makefile
	@mkdir -p $(@D)
	@{ echo '.section .rodata'; i=0; for f in $(LUA_MODS); do \
	    m=$$(echo $$f | sed -e 's|^lua/||' -e 's|\.lua$$||' -e 's|/init$$||' -e 's|/|.|g'); \
	    echo "gm_mod_name$$i: .asciz \"$$m\""; echo "gm_mod_path$$i: .asciz \"@$$f\""; \
	    echo "gm_mod_src$$i: .incbin \"$(CURDIR)/$$f\""; \
	    echo '.byte 0'; i=$$((i+1)); done; \
	  echo '.section .data.rel.ro,"aw"'; echo '.balign 8'; echo '.globl gm_embedded_lua'; \
	  echo 'gm_embedded_lua:'; i=0; for f in $(LUA_MODS); do \
	    echo ".quad gm_mod_name$$i, gm_mod_src$$i, gm_mod_path$$i"; i=$$((i+1)); done; \
	  echo '.quad 0, 0, 0'; echo '.section .note.GNU-stack,"",@progbits'; } > $@

$(BUILD)/lua_embed.o: $(BUILD)/lua_embed.S
	$(CC) -c $< -o $@

$(BUILD)/gmoe: $(OBJ)
	$(CC) $(OBJ) -o $@ $(LDLIBS_ALL)

$(BUILD)/tests/%: tests/c/%.c tests/tap.h $(ENGINE_OBJ) $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -Itests $< $(ENGINE_OBJ) -o $@ $(LDLIBS_ALL)

# ---- set-up, tests, benchmarks, figures ---------------------------------------------------
deps:
	@sh tests/deps.sh

check-deps: $(BUILD)/.configured

test: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) SAN=$(SAN) $(BUILD)/gmoe $(C_TESTS)
	GMOE=$(BUILD)/gmoe prove -j$(PROVE_JOBS) --exec tests/exec tests/t_layering.sh $(C_TESTS) tests/lua/t_*.lua

# Sweeps on a real scheduler: installs Slurm, munge and GNU parallel when missing (as root).
test-cluster:
	@sh tests/deps.sh cluster
	@$(MAKE) --no-print-directory BUILD=$(BUILD) SAN=$(SAN) $(BUILD)/gmoe
	GMOE=$(BUILD)/gmoe prove -v --exec sh tests/cluster/t_cluster.sh

BENCH_C := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(wildcard tests/bench/*.c))
$(BUILD)/bench/%: tests/bench/%.c $(ENGINE_OBJ) $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $< $(ENGINE_OBJ) -o $@ $(LDLIBS_ALL)

bench: $(BUILD)/gmoe $(BENCH_C)
	@sh tests/bench/run.sh $(BUILD)

figures: deps
	@$(MAKE) --no-print-directory BUILD=$(BUILD) SAN=$(SAN) $(BUILD)/gmoe
	@GMOE=$(BUILD)/gmoe QUICK=$(QUICK) sh experiments/all.sh

asan:
	@:

clean:
	rm -rf build build-asan build-*
