#!/bin/sh
# run.sh: `make bench` runs this with the build dir ($1, default build). Prints the machine,
# then the benchmark tables: the engine against cblas_sgemm and a STREAM triad in one C
# process (tests/bench/bench_engine.c, built here against the engine objects), the Lua
# binding's per-op overhead, memory over a long training loop, and full training steps
# (tests/bench/train.lua) with OMP_WAIT_POLICY as it is and set to active, and top-k MoE
# training steps at three sizes against PyTorch 1.13 (tests/bench/moe.lua), and the MQAR step
# of the associative-recall experiment against PyTorch (tests/bench/mqar.lua). Benchmarks
# inform; this script always exits 0. Environment: BENCH_REPS (repeats, default 15),
# BENCH_STEPS (10000).
B=${1:-build}
REPS=${BENCH_REPS:-15}
STEPS=${BENCH_STEPS:-10000}
GMOE=$B/gmoe
HERE=$(dirname "$0")

line() { printf '%s\n' "------------------------------------------------------------------------------------------------------"; }

COMMIT=$(git rev-parse --short HEAD 2>/dev/null) &&
    { git diff --quiet HEAD -- 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"; }
echo "gmoe benchmarks  $(date -u '+%Y-%m-%d %H:%M UTC')  commit ${COMMIT:-unknown}"
echo "machine: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}  OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-unset}  OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
if [ ! -x "$GMOE" ]; then
    echo "run.sh: $GMOE not found; run 'make BUILD=$B' first"
    exit 0
fi
"$GMOE" -e 'local gm = require "gmoe"; print(("gm.blas_info(): %s   gm.get_num_threads(): %d"):format(gm.blas_info(), gm.get_num_threads()))'
echo "ratio: how far past the target (>= 1 passes); times: median [min..max] after warm-up"
line
printf '%-36s %-30s %-14s %7s  %s\n' name measured target ratio verdict
line

# The C benchmark links the engine objects; `make bench` builds it ($(BUILD)/bench/bench_engine).
BIN=$B/bench/bench_engine
[ -x "$BIN" ] || echo "run.sh: $BIN not built (run make bench); skipping the engine benchmarks"
[ -x "$BIN" ] && "$BIN" "$REPS"
line
"$GMOE" "$HERE/overhead.lua" "$REPS"
line
"$GMOE" "$HERE/memory.lua" "$STEPS" "$(getconf PAGESIZE 2>/dev/null || echo 4096)"
line
# Training steps (MLP and CNN, AdamW) as GFLOP/s against gm.matmul's sgemm rate in the same
# process: once with the environment as it is (gmoe re-execs itself with a short OpenMP spin,
# GOMP_SPINCOUNT=30000, when neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set; lua/process.c),
# once with OMP_WAIT_POLICY=active (threads spin without end), to show what the short spin buys.
"$GMOE" "$HERE/train.lua" "$REPS" "OMP_WAIT_POLICY as-is"
line
OMP_WAIT_POLICY=active "$GMOE" "$HERE/train.lua" "$REPS" "OMP_WAIT_POLICY=active"
line
# MoE training steps (issue 4): gm.nn.MoE with gm.gates.TopK{k=2}, dropless, f32, MSE + AdamW,
# at the three sizes against PyTorch 1.13 CPU times, the large one also against the
# sgemm rate of the same process; info rows split each step into phases.
"$GMOE" "$HERE/moe.lua" "$REPS"
line
# LM training steps (issue 5): 2-layer LM with an MLP after each mixer, B=64, T=128, V=256,
# attention / GLA recurrent / GLA chunkwise at d_model 64 and 128, against PyTorch 1.13 CPU.
"$GMOE" "$HERE/lm.lua" "${LM_REPS:-7}"
line
# MQAR training step (issue 12): the associative-recall model (experiments/lib/mqar.lua) for
# attention and base_conv at T=256, d=64, B=64, V=8192, logits at the answer positions only,
# interleaved with the same step in PyTorch (tests/bench/torch_mqar.py); target >= 2x.
"$GMOE" "$HERE/mqar.lua" "${MQAR_REPS:-7}"
line
exit 0
