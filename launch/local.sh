#!/usr/bin/env bash
# Runs one experiment (or study) as N local processes with D CPU devices each, joined by
# JAX's multi-controller runtime (gloo collectives, coordinator on localhost):
# the same code path as a multi-host TPU slice, on one machine.
#
#   launch/local.sh 2 2 --config=configs/online.py:tiny --workdir=runs/online-2x2
#
# Each process logs to <workdir>/process_<i>.log; the script exits non-zero
# if any process fails, naming the one that failed first. Once one has failed,
# the others have ALIGNMENT_HEARTBEAT_TIMEOUT + 15 seconds to end (time to name
# the process they lost); one still running then (hung, or stopped) is killed
# and named, so the script never waits forever. Process 0 alone writes metrics, TensorBoard and the
# export; every process writes its own shards of the checkpoints and its own
# rows of the D_online stream. Batches do not depend on N (data.virtual_shards,
# default 8, must be a multiple of N), so a run or its checkpoint can move
# between `local.sh 2 2` and a single 4-device process.
# XLA_FLAGS given to the script reach every process, with the device count added.
# PORT=... picks the coordinator's port (default: random); PYTHON=... the
# interpreter (default: .venv/bin/python of this checkout); MODULE=... the module
# every process runs (default alignment.main; alignment.study runs a whole study
# across the processes, README.md "Multi-process runs"):
#
#   MODULE=alignment.study launch/local.sh 2 2 --config=configs/study.py:smoke --workdir=runs/s
set -uo pipefail
module=${MODULE:-alignment.main}
if [ $# -lt 3 ]; then
  echo "usage: [MODULE=alignment.study] $0 NUM_PROCESSES DEVICES_PER_PROCESS <$module flags>" >&2
  exit 2
fi
n=$1; d=$2; shift 2
workdir=""
for arg in "$@"; do
  case $arg in --workdir=*) workdir=${arg#--workdir=} ;; esac
done
[ -n "$workdir" ] || { echo "error: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$workdir"
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < n; i++)); do
  XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$d" JAX_PLATFORMS=cpu \
  ALIGNMENT_COORDINATOR="localhost:$port" ALIGNMENT_NUM_PROCESSES="$n" \
  ALIGNMENT_PROCESS_ID="$i" PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m "$module" "$@" > "$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
# Waits for the processes as they end. The first to fail is named first (with its
# signal if it was killed), then each failed process's own error line: when a
# process dies, the others say which one they lost and exit (status 3) within
# ALIGNMENT_HEARTBEAT_TIMEOUT seconds (alignment.distributed).
declare -A index
for i in "${!pids[@]}"; do index[${pids[$i]}]=$i; done
remaining=("${pids[@]}")
status=0
grace=$(( ${ALIGNMENT_HEARTBEAT_TIMEOUT:-30} + 15 ))
killer=""
reaped="$workdir/.killed_by_local_sh"
rm -f "$reaped"
while ((${#remaining[@]} > 0)); do
  ended=""
  wait -n -p ended "${remaining[@]}" 2>/dev/null  # (bash's own "Killed" notice: said below)
  rc=$?
  [ -n "$ended" ] || break
  left=()
  for pid in "${remaining[@]}"; do [ "$pid" = "$ended" ] || left+=("$pid"); done
  remaining=("${left[@]}")
  i=${index[$ended]}
  ((rc == 0)) && continue
  how="exit status $rc"
  ((rc > 128)) && how="killed by SIG$(kill -l $((rc - 128)))"
  if grep -qx "$ended" "$reaped" 2>/dev/null; then
    echo "error: process $i did not end within ${grace} s of the first failure (hung or" \
         "stopped); killed it; see $workdir/process_$i.log" >&2
    continue
  fi
  if ((status == 0)); then
    echo "error: process $i failed first ($how); see $workdir/process_$i.log" >&2
  else
    echo "error: process $i failed too ($how); see $workdir/process_$i.log" >&2
  fi
  line=$(grep '^error: ' "$workdir/process_$i.log" | tail -n 1)
  [ -z "$line" ] || echo "  process $i: $line" >&2
  if ((status == 0)); then  # the first failure: the others get a grace period
    ( sleep "$grace"
      for pid in "${remaining[@]}"; do
        kill -0 "$pid" 2>/dev/null && echo "$pid" >> "$reaped" && kill -KILL "$pid"
      done ) &
    killer=$!
  fi
  status=1
done
[ -z "$killer" ] || { pkill -P "$killer" 2>/dev/null; kill "$killer" 2>/dev/null; }
rm -f "$reaped"
exit $status
