#!/usr/bin/env bash
# Instructions per message of the Kafka consumer against a plain rdkafka StreamConsumer loop,
# counted by callgrind: unlike the kafka bench's wall-clock figures, the counts do not move with
# the machine's load. Same bench binary, same broker (Tansu), same messages; a current-thread
# tokio runtime, so the consumer's own work (receive, dispatch, handler, offsets, control loop) is
# on the main thread and librdkafka's fetching on its own threads.
#
# Each side runs with 50,000 and 100,000 messages, one round and two: the count per message is
# the slope (the second round's cost at 100,000 minus at 50,000, over 50,000), so what a round
# costs whatever its length (group join, consumer creation) drops out. What runs by the clock
# stays in, inflated by valgrind's slowdown (the manager's control loop, and librdkafka's
# statistics, which the manager turns on for the lag and parses once a second): the counts move
# by a few percent from run to run, against the manager.
#
# Usage: bash benches/kafka_icount.sh   (needs valgrind, and .ci/tansu.sh fetch; ~2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
# The kafka bench's own executable (the build lists the package's `icount` binary too).
bin=$(cargo bench -q -p ace-benches --bench kafka --no-run --message-format=json \
    | grep -o '"executable":"[^"]*/deps/kafka-[^"]*"' | tail -1 | cut -d'"' -f4)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# The main thread's instructions for one run of side $1, $2 messages, $3 rounds. (librdkafka's
# threads are left out: their timers run by the clock, and under valgrind's slowdown that work
# does not scale with the messages.)
ir() {
    rm -f "$out"/cg.*
    ACE_BENCH_RUNTIME=current ACE_BENCH_ONLY="$1" ACE_BENCH_MESSAGES="$2" ACE_BENCH_ROUNDS="$3" \
        valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.%p" \
        "$bin" --bench >"$out/log" 2>&1
    awk '/^summary:/ { print $2; exit }' "$(ls "$out"/cg.*-01 | head -1)"
}

printf '%-12s %s\n' side 'instructions per message on the main thread (ratio to plain)'
plain=0
for side in plain unordered key-ordered; do
    a=$(( $(ir "$side" 50000 2) - $(ir "$side" 50000 1) ))
    b=$(( $(ir "$side" 100000 2) - $(ir "$side" 100000 1) ))
    per=$(( (b - a) / 50000 ))
    [ "$side" = plain ] && plain=$per
    printf '%-12s %6d (%s)\n' "$side" "$per" "$(awk -v a="$per" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')"
done
