#!/usr/bin/env bash
# The worker's fault and checkpoint tests (SIGKILL mid-stream, the two checkpoint crash
# points, two workers in a group, bad input) N times in a row in CI mode (Kafka tests must
# run, not skip); stops at the first failing round and prints `passed K/N`.
#
#   tests/loop_worker_faults.sh [N] [pytest args...]      N defaults to 20
#
# Each round's pytest temp dir (worker logs: worker-1.log, worker-2.log, ...) goes to
# $LOOP_DIR/round-K (default /tmp/loop_worker_faults); a passing round's is removed, the
# failing one's is kept for its evidence. Exit status 0 only if every round passed.
set -u
cd "$(dirname "$0")/.."

n="${1:-20}"
shift $(( $# > 0 ? 1 : 0 ))
loop_dir="${LOOP_DIR:-/tmp/loop_worker_faults}"
tests=(tests/integration/test_worker_faults.py tests/integration/test_worker_checkpoints.py)
mkdir -p "$loop_dir"

passed=0
for ((round = 1; round <= n; round++)); do
    base="$loop_dir/round-$round"
    rm -rf "$base"
    echo "== round $round/$n ($(date -u +%H:%M:%S))" >&2
    if CI=true .venv/bin/pytest "${tests[@]}" -x -q -p no:cacheprovider --basetemp="$base" "$@"
    then
        passed=$((passed + 1))
        # how often the worker caught a hole in the offsets faust delivered (_offsets.py)
        echo "round $round: holes read again: $(cat "$base"/*/worker-*.log 2>/dev/null \
            | grep -c 'were not delivered')" >&2
        rm -rf "$base"
    else
        echo "round $round failed: its worker logs are under $base" >&2
        break
    fi
done
echo "passed $passed/$n"
[ "$passed" -eq "$n" ]
