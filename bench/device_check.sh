#!/usr/bin/env bash
# The device check: ONE script that a session lent a GPU machine runs once, and that comes back with every figure.
#
#   GPU (from the repository root, with the bundle: see README "Device check (GPU)"):
#       source .devbundle/activate.sh && bash bench/device_check.sh --output $OUT
#   CPU dry run (plumbing only; tests/readiness/test_device_check.py runs it):
#       bash bench/device_check.sh --output DIR --device cpu --tiny
#
# Parts, each in its own process under its own coreutils `timeout`, so that a failure or an overrun of one part
# still leaves the figures of the others (speed and compile also stop a slow trainer at their deadline and record it,
# and rewrite their JSON after every trainer, so even a part killed by its limit keeps the trainers it finished):
#   prepare  bench/bench_trainers.py --prepare-only: the phantom (4 channels), nnU-Net's plans and preprocessing, the
#            fixed configuration 3d_bench (3d_fullres with patch 64x160x160, batch 2), the methods' extra data.
#   speed    bench/bench_trainers.py: for nnUNetTrainer and every plugin trainer ms/iteration GPU-only and with
#            nnU-Net's data augmentation (compile as nnU-Net's default, warm-up not timed), predict s/case, peak GPU
#            memory vs the planner's estimate; each trainer's ratio to stock and the issue's goals.
#   compile  bench/bench_compile.py: graph breaks of each trainer's training and inference forward, compiled frames
#            over 6 training steps with varying batches (inductor on CUDA, eager on the CPU).
#   quality  bench/device_report.py quality: a short CMG vs stock run (bench/bench_cmg.py) in the time that is left;
#            skipped when too little is left (and on --tiny unless --quality smoke or a quality time limit is given).
# Speed and compile run one after the other, except on CPU dry runs (--tiny --device cpu), where they run side by
# side (--parallel / --sequential decide): there the numbers mean nothing and the dry run halves its time.
# Then bench/device_report.py report merges them into the output folder:
#   device_check.json  environment, every part (status ok / failed with its log tail / timed out / skipped, seconds,
#                      result), a summary with the goals; device_check.png  one figure with the key panels.
# Full logs: <output>/logs/<part>.log. Scratch data (nnU-Net folders): --workdir, by default a temporary folder
# outside the output (so that the output stays small), removed at the end unless --keep-work.
#
# Options:
#   --output DIR         where device_check.json, device_check.png and logs/ go (required)
#   --device cuda|cpu    [cuda]
#   --tiny               tiny data and schedule (4 cases of 16x32x32, 2 channels, narrow U-Net, 1 iteration)
#   --budget S           seconds the whole script may take [420 on the GPU: 8 minutes with the bundle's set-up;
#                        600 with --tiny]
#   --timeout PART=S     a part's time limit in whole seconds (PART: prepare, speed, compile, quality); also the
#                        variables DEVICE_CHECK_TIMEOUT_PREPARE, _SPEED, _COMPILE, _QUALITY
#                        [GPU: 90, 200, 120, what is left; --tiny: 180, 300, 300, skipped]
#   --quality MODE       auto (by the time left; skipped on --tiny) | short | smoke | skip   [auto]
#   --workdir DIR        scratch folder [a new temporary folder]
#   --keep-work          keep the scratch folder
#   --parallel, --sequential   speed and compile side by side or not [side by side on --tiny --device cpu only]
# The interpreter is $PYTHON if set, else python3. Exit status 0 when device_check.json was written.
set -u -o pipefail

usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

OUT="" DEVICE=cuda TINY=0 BUDGET="" WORK="" KEEP_WORK=0 QUALITY=auto PARALLEL=""
T_PREPARE=${DEVICE_CHECK_TIMEOUT_PREPARE:-} T_SPEED=${DEVICE_CHECK_TIMEOUT_SPEED:-} T_COMPILE=${DEVICE_CHECK_TIMEOUT_COMPILE:-} T_QUALITY=${DEVICE_CHECK_TIMEOUT_QUALITY:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --output) OUT=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --budget) BUDGET=$2; shift 2 ;;
    --workdir) WORK=$2; shift 2 ;;
    --keep-work) KEEP_WORK=1; shift ;;
    --parallel) PARALLEL=1; shift ;;
    --sequential) PARALLEL=0; shift ;;
    --quality) QUALITY=$2; shift 2 ;;
    --timeout)
      case "${2%%=*}" in
        prepare) T_PREPARE=${2#*=} ;; speed) T_SPEED=${2#*=} ;; compile) T_COMPILE=${2#*=} ;; quality) T_QUALITY=${2#*=} ;;
        *) echo "device_check: unknown part in --timeout $2 (prepare, speed, compile, quality)" >&2; exit 2 ;;
      esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "device_check: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$OUT" ] || { echo "device_check: --output DIR is required" >&2; exit 2; }
case "$QUALITY" in auto|short|smoke|skip) ;; *) echo "device_check: --quality auto|short|smoke|skip" >&2; exit 2 ;; esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
PY=${PYTHON:-python3}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOGS=$OUT/logs
CREATED_WORK=0
if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX"); CREATED_WORK=1; fi
mkdir -p "$WORK" && WORK=$(cd "$WORK" && pwd)
rm -rf "$WORK/status" "$WORK/speed" "$WORK/compile" "$WORK/quality" "$LOGS"
rm -f "$OUT/device_check.json" "$OUT/device_check.png"
mkdir -p "$WORK/status" "$LOGS"

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
# UTF-8 for files and output unless the caller decided (bench_cmg.py writes its tables in the locale's encoding)
export PYTHONUTF8=${PYTHONUTF8:-1}
# the plugin's trainers for nnU-Net's lookup (the install's start-up hook does the same; this also covers a
# PYTHONPATH-only install)
export nnUNet_extTrainer="${nnUNet_extTrainer:+$nnUNet_extTrainer:}$REPO/trainers"
# every part's nnU-Net folders in the scratch folder (nnU-Net reads them when it is first imported)
export nnUNet_raw=$WORK/nnunet/raw nnUNet_preprocessed=$WORK/nnunet/preprocessed nnUNet_results=$WORK/nnunet/results

if [ "$TINY" = 1 ]; then
  export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1} nnUNet_def_n_proc=${nnUNet_def_n_proc:-1}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  BUDGET=${BUDGET:-600}
  SIZES=(--patch 16 32 32 --case-shape 16 32 32 --num-cases 4 --batch-size 2 --num-phases 2 --base-features 8
         --num-processes 1)
  SCHEDULE=(--iterations 1 --warmup 1)
  STEPS=4 NP=1 PREPARE_DEFAULT=180 SPEED_DEFAULT=300 COMPILE_DEFAULT=300
  PER_TRAINER=()
else
  BUDGET=${BUDGET:-420}
  # 4 channels, patch 64x160x160, batch 2 as the GPU reference in ../shared/device/README.md; 4 cases of 80x192x192
  # (writing the phantom costs ~4 s per case)
  SIZES=(--patch 64 160 160 --case-shape 80 192 192 --num-cases 4 --batch-size 2 --num-phases 4 --num-processes 8)
  SCHEDULE=(--iterations 30 --warmup 3)
  STEPS=6 NP=8 PREPARE_DEFAULT=90 SPEED_DEFAULT=200 COMPILE_DEFAULT=120
  # a trainer whose compilation hangs must not take the others' time (CMG and CMC compile the most)
  PER_TRAINER=(--trainer-timeout 100)
fi
# side by side only where timings mean nothing anyway (a CPU dry run); on a GPU they would disturb each other
[ -n "$PARALLEL" ] || { [ "$TINY" = 1 ] && [ "$DEVICE" = cpu ] && PARALLEL=1 || PARALLEL=0; }
REPORT_RESERVE=30   # seconds kept for the report at the end
MARGIN=15           # seconds a part keeps to write its JSON before its hard time limit

START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( BUDGET - $(elapsed) )); }
now() { date +%s.%N; }

# run_part NAME LIMIT COMMAND...: the command under `timeout`, its output in logs/NAME.log, its status recorded
run_part() {
  local name=$1 limit=$2; shift 2
  local t0; t0=$(now)
  echo "[device_check] $name: up to ${limit} s ($(elapsed) s elapsed)"
  timeout --kill-after=15 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  local seconds; seconds=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  printf '{"part": "%s", "rc": %d, "seconds": %s, "limit_s": %s}\n' "$name" "$rc" "$seconds" "$limit" \
    >"$WORK/status/$name.json"
  echo "[device_check] $name: exit $rc after ${seconds} s"
  [ "$rc" = 0 ] || tail -n 5 "$LOGS/$name.log" | sed "s/^/[device_check]   $name| /"
}

skip_part() {
  local name=$1 reason=$2
  printf '{"part": "%s", "skipped": "%s", "seconds": 0, "limit_s": null}\n' "$name" "$reason" >"$WORK/status/$name.json"
  echo "[device_check] $name: skipped ($reason)"
}

deadline() { local limit=$1; [ "$limit" -gt $((MARGIN * 2)) ] && echo $((limit - MARGIN)) || echo "$limit"; }

echo "[device_check] device $DEVICE, tiny $TINY, budget ${BUDGET} s, output $OUT, scratch $WORK, python $PY"

# --- prepare: the phantom, its plans and preprocessing, the methods' extra data (speed and compile use them) ----
L=${T_PREPARE:-$PREPARE_DEFAULT}
run_part prepare "$L" "$PY" bench/bench_trainers.py --output "$WORK/speed" --workdir "$WORK/nnunet" --prepare-only \
  --quick-fingerprint "${SIZES[@]}"
PREPARED=0
[ -f "$WORK/status/prepare.json" ] && grep -q '"rc": 0,' "$WORK/status/prepare.json" && PREPARED=1

# --- speed and compile (one after the other on a GPU; side by side with --parallel) -------------------------------
L_SPEED=${T_SPEED:-$SPEED_DEFAULT}
L_COMPILE=${T_COMPILE:-$COMPILE_DEFAULT}
SPEED=("$PY" bench/bench_trainers.py --output "$WORK/speed" --workdir "$WORK/nnunet" --skip-prepare
       --device "$DEVICE" --all-trainers "${SIZES[@]}" "${SCHEDULE[@]}" --deadline-s "$(deadline "$L_SPEED")"
       ${PER_TRAINER[@]+"${PER_TRAINER[@]}"})
COMPILE=("$PY" bench/bench_compile.py --output "$WORK/compile" --workdir "$WORK/nnunet" --skip-prepare
         --device "$DEVICE" --steps "$STEPS" --deadline-s "$(deadline "$L_COMPILE")"
         ${PER_TRAINER[@]+"${PER_TRAINER[@]}"})
if [ "$PREPARED" = 0 ]; then
  skip_part speed "the prepare part failed, see logs/prepare.log"
  skip_part compile "the prepare part failed, see logs/prepare.log"
elif [ "$PARALLEL" = 1 ]; then
  run_part speed "$L_SPEED" "${SPEED[@]}" &
  SPEED_PID=$!
  run_part compile "$L_COMPILE" "${COMPILE[@]}" &
  COMPILE_PID=$!
  wait "$SPEED_PID" "$COMPILE_PID"
else
  run_part speed "$L_SPEED" "${SPEED[@]}"
  run_part compile "$L_COMPILE" "${COMPILE[@]}"
fi

# --- quality, in the time that is left --------------------------------------------------------------------------
LEFT=$(( $(remaining) - REPORT_RESERVE ))
if [ "$QUALITY" = skip ]; then
  skip_part quality "--quality skip"
elif [ "$QUALITY" = auto ] && [ "$TINY" = 1 ] && [ -z "$T_QUALITY" ]; then
  skip_part quality "--tiny: skipped, pass --quality smoke to run bench_cmg --smoke"
elif [ -z "$T_QUALITY" ] && [ "$LEFT" -lt 60 ]; then
  skip_part quality "only ${LEFT} s left of the ${BUDGET} s budget"
else
  L=${T_QUALITY:-$LEFT}
  MODE=$QUALITY
  [ "$MODE" = auto ] && [ "$TINY" = 1 ] && MODE=smoke
  (
    export nnUNet_raw=$WORK/quality/work/raw nnUNet_preprocessed=$WORK/quality/work/preprocessed \
           nnUNet_results=$WORK/quality/work/results
    run_part quality "$L" "$PY" bench/device_report.py quality --output "$WORK/quality" --device "$DEVICE" \
      --budget-s "$(deadline "$L")" --preset "$MODE" -np "$NP"
  )
fi

# --- report -----------------------------------------------------------------------------------------------------
OPTIONS=$(printf '{"device": "%s", "tiny": %s, "parallel": %s, "budget_s": %s, "quality": "%s", "timeouts": {"prepare": "%s", "speed": "%s", "compile": "%s", "quality": "%s"}}' \
  "$DEVICE" "$([ "$TINY" = 1 ] && echo true || echo false)" "$([ "$PARALLEL" = 1 ] && echo true || echo false)" \
  "$BUDGET" "$QUALITY" "$T_PREPARE" "$T_SPEED" "$T_COMPILE" "$T_QUALITY")
echo "[device_check] report ($(elapsed) s elapsed)"
timeout --kill-after=10 120 "$PY" bench/device_report.py report --output "$OUT" --work "$WORK" --device "$DEVICE" \
  --options "$OPTIONS" >"$LOGS/report.log" 2>&1
RC=$?
if [ ! -f "$OUT/device_check.json" ]; then  # the report failed: at least the parts' statuses come back
  {
    printf '{"report_error": "device_report.py exit %s, see logs/report.log", "options": %s, "parts": {' "$RC" "$OPTIONS"
    sep=""
    for part in prepare speed compile quality; do
      [ -f "$WORK/status/$part.json" ] && { printf '%s"%s": ' "$sep" "$part"; tr -d '\n' <"$WORK/status/$part.json"; sep=", "; }
    done
    printf '}}\n'
  } >"$OUT/device_check.json"
  tail -n 20 "$LOGS/report.log"
fi
grep -v '^$' "$LOGS/report.log" | tail -c 9000
echo "[device_check] done in $(elapsed) s:" "$OUT"/device_check.* 2>/dev/null
if [ "$CREATED_WORK" = 1 ] && [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"; fi
[ -f "$OUT/device_check.json" ]
