#!/usr/bin/env bash
# The README's test command (.ci/run) from fresh clones, N times in a row, while two busy loops
# hold both cores of a 2-core machine. Stops at the first failure. Writes OUT/summary.txt.
#
#   bash benchmarks/tests_under_load.sh [RUNS=5] [OUT=/tmp/tests_under_load] [REV=HEAD]
set -uo pipefail
RUNS=${1:-5}; OUT=${2:-/tmp/tests_under_load}; ROOT=$(cd "$(dirname "$0")/.." && pwd)
REV=$(git -C "$ROOT" rev-parse "${3:-HEAD}")
rm -rf "$OUT" && mkdir -p "$OUT"
python3 -c "while True: pass" & L1=$!
python3 -c "while True: pass" & L2=$!
trap 'kill $L1 $L2 2>/dev/null' EXIT
for i in $(seq 1 "$RUNS"); do
  d="$OUT/run$i"; mkdir -p "$d"
  git clone -q "$ROOT" "$d/repo" && git -C "$d/repo" checkout -q "$REV"
  start=$(date +%s); (cd "$d/repo" && .ci/run) > "$d/ci.log" 2>&1; rc=$?
  echo "run $i at ${REV:0:7}: rc=$rc, $(( $(date +%s) - start )) s; $(tail -1 "$d/ci.log")" | tee -a "$OUT/summary.txt"
  rm -rf "$d/repo/.venv"
  [ "$rc" -eq 0 ] || exit "$rc"
done
