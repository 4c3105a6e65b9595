#!/usr/bin/env bash
# Side-by-side speed of protoclr and PyTorch (issues 3 and 14): runs `protoclr bench` (f32 and
# bf16) and benches/torch_reference.py in each of its variants for each setting, one process at
# a time with the same thread count, and prints `protoclr bench table` of the results.
#
#   bash benches/run.sh BIN          (what `make bench` runs; BIN is the protoclr binary)
#
# Environment:
#   THREADS=2   threads for both frameworks (protoclr --threads, torch.set_num_threads)
#   FULL=1      also the slow full-width (64) training step; FULL=0 skips it
#   STEPS=5     timed steps (median reported); warm-up is 2 steps for training, 1 for inference
#               (torch.compile variants warm up until a step compiles nothing more)
#   ROUNDS=3    rounds over all settings; within a round every variant runs once per setting, and
#               the order of the variants rotates by one from round to round, so none always goes
#               first or last. The table shows each variant's median over the rounds with its
#               range (this VM's speed drifts by ±20 % over minutes, so one back-to-back pair
#               can mislead)
#   VARIANTS="protoclr protoclr+bf16 eager channels_last channels_last+bf16
#             compile+channels_last compile+channels_last+bf16"
#               what runs (the default is all of these). `protoclr` and `protoclr+bf16` are
#               `protoclr bench … --precision f32|bf16`; every other name is a PyTorch variant,
#               `+`-separated parts of: eager (plain NCHW f32), channels_last
#               (--memory-format channels_last), bf16 (--autocast bf16), compile (--compile),
#               so e.g. `bf16` alone is NCHW under autocast
#   VENV=.venv  where PyTorch is installed if it is not importable there yet
#   KEEP=FILE   also keep the raw JSON lines in FILE
#   TORCH_SPEC=torch   what pip installs when the venv lacks PyTorch (e.g. torch==2.15.0)
#
# A variant that cannot run (no native bf16 on this CPU, a torch.compile failure, a protoclr
# binary without --precision, a crash) leaves one JSON line with "skipped": "why", shown in the
# table as "skipped", and the run goes on.
#
# PyTorch comes from PyPI (the only index reachable here): the Linux x86_64 `torch` wheel is the
# CUDA build and pulls in the nvidia-* / cuda-* / triton wheels, about 3 GB to download and
# 5.3 GB in the venv (torch 2.15: ~70 s on this machine). It runs on the CPU without a GPU.
# torch.compile (inductor) also needs a C++ compiler (g++) on the PATH.
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
all_variants="protoclr protoclr+bf16 eager channels_last channels_last+bf16"
all_variants+=" compile+channels_last compile+channels_last+bf16"
read -r -a variants <<<"${VARIANTS:-$all_variants}"
((${#variants[@]} > 0)) || { echo "run.sh: VARIANTS is empty" >&2; exit 1; }
for v in "${variants[@]}"; do
    case $v in
        protoclr | protoclr+bf16) ;;
        *) IFS=+ read -r -a parts <<<"$v"
           for p in "${parts[@]}"; do
               case $p in eager | channels_last | bf16 | compile) ;;
                   *) echo "run.sh: VARIANTS: unknown variant '$v' (part '$p';" \
                          "parts are eager, channels_last, bf16, compile)" >&2
                      exit 1 ;;
               esac
           done ;;
    esac
done

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "run.sh: installing PyTorch from PyPI into $VENV (about 3 GB download)…" >&2
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet "${TORCH_SPEC:-torch}"
fi

out=$(mktemp "${TMPDIR:-/tmp}/protoclr-bench.XXXXXX")
err=$(mktemp "${TMPDIR:-/tmp}/protoclr-bench-err.XXXXXX")
trap 'rm -f "$out" "$err"' EXIT

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
echo "run.sh: $THREADS threads, $STEPS timed steps, $ROUNDS rounds, variants: ${variants[*]};" \
    "CPU ${busy}% busy before the run; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if ((busy >= 20)); then
    echo "run.sh: warning: other processes are using the CPU; both frameworks slow down when the" \
        "cores are shared, PyTorch's OpenMP threads especially, so these numbers are unreliable" >&2
fi

# Appends the JSON lines on stdin to $out, adding the KEY=VALUE pairs (strings) they lack.
tag() {
    "$PY" -c '
import json, sys
extra = dict(a.split("=", 1) for a in sys.argv[1:])
for line in sys.stdin:
    if line.strip():
        d = json.loads(line)
        for k, v in extra.items():
            d.setdefault(k, v)
        print(json.dumps(d))
' "$@" >>"$out"
}
# Appends a "skipped" line for the current setting: FRAMEWORK VARIANT PRECISION REASON.
skipped() {
    echo "run.sh: $kind width $width batch $batch: $2 skipped: $4" >&2
    "$PY" -c '
import json, sys
fw, variant, precision, why, kind, width, batch, threads = sys.argv[1:]
print(json.dumps({"framework": fw, "kind": kind, "model": "resnet18", "width": int(width),
                  "batch": int(batch), "threads": int(threads), "variant": variant,
                  "precision": precision, "skipped": why}))
' "$@" "$kind" "$width" "$batch" "$THREADS" >>"$out"
}
# A failed command's error line (protoclr's `error: …`, else the last line of its stderr, where
# Python puts the exception), for the "skipped" reason.
why_failed() {
    local line
    line=$(grep -m1 -E '^(error|Error)[: ]' "$err" || true)
    [[ -n $line ]] || line=$(grep -v '^\s*$' "$err" | tail -1 || true)
    echo "exit status $1: ${line:0:300}"
}

# Whether `protoclr bench KIND` takes --precision (bf16 may come to training before inference).
has_precision() { [[ $("$BIN" bench "$1" --help 2>/dev/null || true) == *--precision* ]]; }

ours() { # PRECISION
    local prec=$1 label=protoclr extra=() rc=0 json
    if [[ $prec == bf16 ]]; then
        label=protoclr+bf16
        if ! has_precision "$kind"; then
            skipped protoclr "$label" bf16 "this protoclr binary has no \`bench $kind --precision\`"
            return
        fi
        extra=(--precision bf16)
    fi
    json=$("$BIN" --threads "$THREADS" bench "$kind" --model resnet18 --width "$width" --batch "$batch" \
        --steps "$STEPS" --warmup "$warmup" "${extra[@]}" --json 2>"$err") || rc=$?
    if ((rc == 0)) && [[ -z $json ]]; then rc=1; echo "error: no JSON line on stdout" >>"$err"; fi
    if ((rc != 0)); then
        cat "$err" >&2
        skipped protoclr "$label" "$prec" "$(why_failed $rc)"
    else
        tag variant="$label" precision="$prec" <<<"$json"
    fi
}
theirs() { # VARIANT
    local v=$1 args=() parts p rc=0 json prec=f32
    IFS=+ read -r -a parts <<<"$v"
    for p in "${parts[@]}"; do
        case $p in
            channels_last) args+=(--memory-format channels_last) ;;
            bf16) args+=(--autocast bf16); prec=bf16 ;;
            compile) args+=(--compile) ;;
        esac
    done
    json=$("$PY" "$here/torch_reference.py" --kind "$kind" --model resnet18 --width "$width" --batch "$batch" \
        --threads "$THREADS" --steps "$STEPS" --warmup "$warmup" "${args[@]}" 2>"$err") || rc=$?
    if ((rc == 0)) && [[ -z $json ]]; then rc=1; echo "error: no JSON line on stdout" >>"$err"; fi
    if ((rc != 0)); then
        cat "$err" >&2
        skipped pytorch "$v" "$prec" "$(why_failed $rc)"
    else
        if grep -q '"skipped"' <<<"$json"; then grep -v '^\s*$' "$err" | tail -1 >&2; fi
        tag <<<"$json"
    fi
}
for ((round = 1; round <= ROUNDS; round++)); do
    n=${#variants[@]}
    shift_by=$(((round - 1) % n))
    order=("${variants[@]:shift_by}" "${variants[@]:0:shift_by}")
    for s in "${settings[@]}"; do
        read -r kind width batch warmup <<<"$s"
        echo "run.sh: round $round/$ROUNDS: $kind width $width batch $batch: ${order[*]}" >&2
        for v in "${order[@]}"; do
            case $v in
                protoclr) ours f32 ;;
                protoclr+bf16) ours bf16 ;;
                *) theirs "$v" ;;
            esac
        done
    done
done
echo "run.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg); $("$PY" -c 'import torch; print("torch", torch.__version__)' 2>/dev/null)" >&2

if [[ -n "${KEEP:-}" ]]; then cp "$out" "$KEEP"; fi
"$BIN" bench table "$out"
