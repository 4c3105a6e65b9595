#!/usr/bin/env bash
# Side-by-side speed of protoclr and PyTorch (issue 3's benchmark): runs `protoclr bench` and
# benches/torch_reference.py for each setting, one process at a time with the same thread count,
# and prints `protoclr bench table` of the results.
#
#   bash benches/run.sh BIN          (what `make bench` runs; BIN is the protoclr binary)
#
# Environment:
#   THREADS=2   threads for both frameworks (protoclr --threads, torch.set_num_threads)
#   FULL=1      also the slow full-width (64) training step; FULL=0 skips it
#   STEPS=5     timed steps (median reported); warm-up is 2 steps for training, 1 for inference
#   ROUNDS=3    rounds over all settings, the two frameworks taking turns going first; the table
#               shows each framework's median over the rounds with its range (this VM's speed
#               drifts by ±20 % over minutes, so one back-to-back pair can mislead)
#   VENV=.venv  where PyTorch is installed if it is not importable there yet
#   KEEP=FILE   also keep the raw JSON lines in FILE
#   TORCH_SPEC=torch   what pip installs when the venv lacks PyTorch (e.g. torch==2.15.0)
#
# PyTorch comes from PyPI (the only index reachable here): the Linux x86_64 `torch` wheel is the
# CUDA build and pulls in the nvidia-* / cuda-* / triton wheels, about 3 GB to download and
# 5.3 GB in the venv (torch 2.15: ~70 s on this machine). It runs on the CPU without a GPU.
set -euo pipefail

BIN=${1:?usage: bash benches/run.sh PATH/TO/protoclr}
[[ -x "$BIN" ]] || { echo "run.sh: $BIN is not an executable (run \`make build\`)" >&2; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
THREADS=${THREADS:-2}
FULL=${FULL:-1}
STEPS=${STEPS:-5}
ROUNDS=${ROUNDS:-3}
VENV=${VENV:-$root/.venv}
PY=$VENV/bin/python

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "run.sh: installing PyTorch from PyPI into $VENV (about 3 GB download)…" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "${TORCH_SPEC:-torch}"
fi

out=$(mktemp "${TMPDIR:-/tmp}/protoclr-bench.XXXXXX")
trap 'rm -f "$out"' EXIT

# kind width batch warmup
settings=("step 16 128 2")
if [[ "$FULL" != 0 ]]; then settings+=("step 64 64 2"); fi
settings+=("infer 16 512 1")

# Share of all cores busy over one second (from /proc/stat), before anything of ours runs.
cpu_busy_pct() {
    local a b
    a=$(head -1 /proc/stat); sleep 1; b=$(head -1 /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x); split(b, y); tot = 0
        for (i = 2; i <= n; i++) tot += y[i] - x[i]
        idle = (y[5] + y[6]) - (x[5] + x[6])
        printf "%.0f", (tot > 0) ? 100 * (tot - idle) / tot : 0 }'
}
busy=$(cpu_busy_pct)
echo "run.sh: $THREADS threads, $STEPS timed steps; CPU ${busy}% busy before the run;" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if ((busy >= 20)); then
    echo "run.sh: warning: other processes are using the CPU; both frameworks slow down when the" \
        "cores are shared, PyTorch's OpenMP threads especially, so these numbers are unreliable" >&2
fi
ours() {
    "$BIN" --threads "$THREADS" bench "$kind" --model resnet18 --width "$width" --batch "$batch" \
        --steps "$STEPS" --warmup "$warmup" --json >>"$out"
}
theirs() {
    "$PY" "$here/torch_reference.py" --kind "$kind" --model resnet18 --width "$width" --batch "$batch" \
        --threads "$THREADS" --steps "$STEPS" --warmup "$warmup" >>"$out"
}
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${settings[@]}"; do
        read -r kind width batch warmup <<<"$s"
        echo "run.sh: round $round/$ROUNDS: $kind width $width batch $batch" >&2
        if ((round % 2)); then ours; theirs; else theirs; ours; fi
    done
done
echo "run.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg); $("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null)" >&2

if [[ -n "${KEEP:-}" ]]; then cp "$out" "$KEEP"; fi
"$BIN" bench table "$out"
