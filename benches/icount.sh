#!/usr/bin/env bash
# Instructions per call of each hot path, counted by callgrind: unlike wall-clock time, the count
# does not move with the machine's load, so a newcomer reproduces it on a busy machine too.
# Usage: bash benches/icount.sh [paths...]   (needs valgrind: apt-get install -y valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(tower_limit ace_layer_untimed tokio_semaphore ace_semaphore acquire submit \
    ace_contended tokio_contended two_yields ace_contended_mt tokio_contended_mt two_yields_mt \
    ace_blocking condvar_blocking)
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ace-benches --bin icount
out=$(mktemp -d)
# The main thread's instruction count (callgrind's file for thread 1), summed over its events;
# for the paths run by several threads (`*_mt`: the runtime's workers; `*_blocking`: the bench's
# threads), every thread's.
ir() {
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$1.$2.%p" \
        "$target/release/icount" "$1" "$2" >/dev/null 2>&1
    case $1 in
        *_mt | *_blocking) cat "$out"/cg."$1"."$2".* ;;
        *) cat "$(ls "$out"/cg."$1"."$2".*-01 | head -1)" ;;
    esac | awk '/^summary:/ { s += $2 } END { print s }'
}
printf '%-20s %s\n' path 'instructions per call'
# Multiples of 64, so that the contended paths (64 tasks) run exactly this many operations.
for p in "${paths[@]}"; do
    a=$(ir "$p" 2048)
    b=$(ir "$p" 22528)
    printf '%-20s %s\n' "$p" $(( (b - a) / 20480 ))
done
rm -rf "$out"
