#!/bin/sh
# run.sh: `make bench` runs this with the build dir ($1, default build). Prints the machine,
# then the benchmark tables, gmoe against PyTorch (Debian's python3-torch, /usr/bin/python3)
# measured in the same run wherever there is a peer (tests/bench/peer.lua; without torch the
# rows say the peer is absent): the engine against cblas_sgemm and a STREAM triad in one C
# process (tests/bench/bench_engine.c, built here against the engine objects); where a second
# thread pays (tests/bench/grain.c, the crossovers behind the grain sizes); gm.matmul under
# every OpenBLAS core type against the default environment (blas_core.lua); the Lua binding's
# per-op overhead (overhead.lua); memory over a long training loop; MLP and CNN training steps
# (train.lua); top-k MoE training steps at three sizes (moe.lua); LM training steps (lm.lua);
# the COMET multi-gate MoE epoch (comet.lua); the MQAR step of the associative-recall experiment
# (mqar.lua).
# BENCH_LOAD=1 runs every row a second time with one CPU-bound process competing for the
# cores (started and stopped here). Benchmarks inform; this script always exits 0.
# Environment: BENCH_REPS (repeats, default 15), BENCH_STEPS (10000), LM_REPS (7), COMET_REPS (7),
# MQAR_REPS (7), BENCH_LOAD (0), BENCH_NO_PEER=1 (skip PyTorch).
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

rows() {
    line
    printf '%-36s %-30s %-14s %7s  %s\n' name measured target ratio verdict
    line
    # The C benchmark links the engine objects; `make bench` builds it ($(BUILD)/bench/bench_engine).
    BIN=$B/bench/bench_engine
    [ -x "$BIN" ] || echo "run.sh: $BIN not built (run make bench); skipping the engine benchmarks"
    [ -x "$BIN" ] && "$BIN" "$REPS"
    line
    # Where a second kernel thread starts to pay (the grains of kernels/cpu/parallel.h, blas.h).
    [ -x "$B/bench/grain" ] && "$B/bench/grain" "$REPS"
    line
    "$GMOE" "$HERE/blas_core.lua" 5
    line
    "$GMOE" "$HERE/overhead.lua" "$REPS"
    line
    "$GMOE" "$HERE/memory.lua" "$STEPS" "$(getconf PAGESIZE 2>/dev/null || echo 4096)"
    line
    # Training steps (MLP and CNN, AdamW) as GFLOP/s against gm.matmul's sgemm rate in the same
    # process, and against PyTorch.
    "$GMOE" "$HERE/train.lua" "$REPS"
    line
    # MoE training steps (issues 4, 16): gm.nn.MoE with gm.gates.TopK{k=2}, dropless, f32, MSE +
    # AdamW, at three sizes against PyTorch, the small one also at the default thread count
    # against one thread, the large one against the sgemm rate of the same process.
    "$GMOE" "$HERE/moe.lua" "$REPS"
    line
    # Adversarial training steps (issue 14): one PGD-2 AT step of the router-robustness experiment's
    # dense CNN and MoE-CNN (batch 128) against the same models in PyTorch, interleaved (peer.lua);
    # where the dense step's time goes.
    "$GMOE" "$HERE/advmoe.lua" "${ADVMOE_REPS:-9}"
    line
    # LM training steps (issue 5): 2-layer LM with an MLP after each mixer, B=64, T=128, V=256,
    # attention / GLA recurrent / GLA chunkwise at d_model 64 and 128, against PyTorch.
    "$GMOE" "$HERE/lm.lua" "${LM_REPS:-7}"
    line
    # COMET reproduction (issue 13): one training epoch (20000 examples, batch 256) of the
    # 16-expert, 2-gate multi-task MoE with top-k and COMET gates, against PyTorch; target >= 3x.
    "$GMOE" "$HERE/comet.lua" "${COMET_REPS:-7}"
    line
    # MQAR training step (issue 12): the associative-recall model (experiments/lib/mqar.lua) for
    # attention and base_conv at T=256, d=64, B=64, V=8192, logits at the answer positions only,
    # interleaved with the same step in PyTorch (tests/bench/torch_mqar.py); target >= 2x.
    "$GMOE" "$HERE/mqar.lua" "${MQAR_REPS:-7}"
    line
}

rows
if [ "${BENCH_LOAD:-0}" = 1 ]; then
    # One CPU-bound process beside every row: a shell busy loop, stopped on any exit.
    sh -c 'while :; do :; done' &
    HOG=$!
    trap 'kill $HOG 2>/dev/null' EXIT INT TERM
    echo
    echo "=== BENCH_LOAD=1: the same rows with one CPU-bound process running (pid $HOG), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    rows
    kill $HOG 2>/dev/null
    wait $HOG 2>/dev/null
    trap - EXIT INT TERM
fi
exit 0
