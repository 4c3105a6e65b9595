#!/bin/bash
# Slurm job-array test of `protoclr grid slurm` on this one machine (Debian 12, as root).
#
#   bash tests/slurm/run.sh [PROTOCLR_BINARY]      (or PROTOCLR_BIN=...; data: PROTOCLR_DATA)
#
# Installs slurmctld, slurmd, slurm-client and munge with apt-get when missing, starts munged,
# slurmctld and slurmd on localhost with a minimal slurm.conf in a temporary folder (ports 16817
# and 16818, so a system Slurm is not disturbed), submits experiments/tiny.yaml (3 cells) as a
# job array into a temporary results folder, waits for the array with squeue, and checks that the
# three cells' status.json say done — never sbatch's exit code, which is 0 even when every task
# launch fails. The daemons it started are stopped by their recorded pids.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${1:-${PROTOCLR_BIN:-}}
if [ -z "$BIN" ]; then
  echo "usage: $0 PROTOCLR_BINARY (or set PROTOCLR_BIN)" >&2
  exit 2
fi
BIN=$(realpath "$BIN")
DATA=${PROTOCLR_DATA:-$ROOT/../shared/datasets}
DATA=$(realpath "$DATA")
TIMEOUT_S=${SLURM_TEST_TIMEOUT_S:-900}
[ -x "$BIN" ] || { echo "not an executable: $BIN" >&2; exit 2; }
[ -d "$DATA/cifar-10-batches-bin" ] || { echo "no CIFAR-10 under $DATA (set PROTOCLR_DATA)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "this test installs and starts Slurm daemons: run it as root" >&2; exit 2; }

log() { echo "[slurm-test] $*" >&2; }

# --- install ---------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >/dev/null
fi

WORK=$(mktemp -d /tmp/protoclr-slurm-test.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    local pid=${PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [ "$rc" != 0 ]; then
    log "FAILED; daemon and task logs:"
    for f in "$WORK"/*.log "$WORK"/results/slurm/*/logs/*.out; do
      [ -f "$f" ] && { echo "--- $f"; tail -n 40 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# --- munge -----------------------------------------------------------------------------------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  log "munged already running"
else
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 0755 /run/munge
  # munged refuses to run as root; setpriv execs (runuser would fork and $! would be wrong).
  setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F \
    </dev/null >"$WORK/munged.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null || { log "munged did not start"; exit 1; }
fi

# --- slurm.conf ------------------------------------------------------------------------------
NODE_LINE=$(slurmd -C | head -n 1)          # NodeName=… CPUs=… … RealMemory=M
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
MEM=$((MEM * 8 / 10))                        # below what slurmd -C reports, else the node is inval
NODE_LINE=$(sed "s/RealMemory=[0-9]*/RealMemory=$MEM/" <<<"$NODE_LINE")
mkdir -p "$WORK/state" "$WORK/spool"
export SLURM_CONF=$WORK/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=protoclrtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# --- daemons ---------------------------------------------------------------------------------
setsid slurmctld -D -f "$SLURM_CONF" </dev/null >"$WORK/slurmctld.out.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  scontrol ping 2>/dev/null | grep -q UP && break
  sleep 0.2
done
scontrol ping | grep -q UP || { log "slurmctld did not come up"; exit 1; }
setsid slurmd -D -f "$SLURM_CONF" -N "$NODE" </dev/null >"$WORK/slurmd.out.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 150); do
  [ "$(sinfo -h -o %t 2>/dev/null | head -n 1)" = idle ] && break
  sleep 0.2
done
[ "$(sinfo -h -o %t | head -n 1)" = idle ] || { log "node not idle: $(sinfo -h -o '%t %E')"; exit 1; }
log "slurm up: node $NODE ($(sinfo -h -o '%c CPUs'))"

# --- the job array ---------------------------------------------------------------------------
RESULTS=$WORK/results
cd "$ROOT"
OUT=$("$BIN" grid slurm experiments/tiny.yaml --profile cpu --results "$RESULTS" --data-root "$DATA" \
  --cpus 1 --mem 500M --time 00:15:00 --submit)
echo "$OUT"
JOB=$(sed -n 's/^submitted job \([0-9]*\).*/\1/p' <<<"$OUT")
[ -n "$JOB" ] || { log "no job id in the output"; exit 1; }
START=$(date +%s)
while [ -n "$(squeue -h -j "$JOB" 2>/dev/null)" ]; do
  if (($(date +%s) - START > TIMEOUT_S)); then
    log "job $JOB still queued or running after $TIMEOUT_S s"
    squeue -j "$JOB"
    scancel "$JOB" || true
    exit 1
  fi
  sleep 0.5
done
log "job $JOB left the queue after $(($(date +%s) - START)) s"

# --- check the results, not sbatch ------------------------------------------------------------
LIST=$(ls "$RESULTS"/slurm/*/cells.txt)
N=$(grep -c . "$LIST")
[ "$N" = 3 ] || { log "expected 3 cells in $LIST, found $N"; exit 1; }
FAIL=0
while read -r ID; do
  ST="$RESULTS/cells/$ID/status.json"
  if [ -f "$ST" ] && grep -q '"status": "done"' "$ST" && [ -f "$RESULTS/cells/$ID/metrics.json" ]; then
    log "cell $ID done"
  else
    log "cell $ID NOT done: $(cat "$ST" 2>/dev/null || echo 'no status.json')"
    FAIL=1
  fi
done <"$LIST"
[ "$FAIL" = 0 ] || exit 1
"$BIN" grid status experiments/tiny.yaml --profile cpu --results "$RESULTS" --data-root "$DATA" | tail -n 3
grep -c ',done,' "$RESULTS/tiny.cpu.csv" | grep -qx 3 || { log "index does not list 3 done cells"; exit 1; }
echo "slurm: 1 passed, 0 failed"
