#!/usr/bin/env bash
# Instructions per call of each hot path, counted by callgrind: unlike wall-clock time, the count
# does not move with the machine's load, so a newcomer reproduces it on a busy machine too.
# Usage: bash benches/icount.sh [paths...]   (needs valgrind: apt-get install -y valgrind)
set -euo pipefail
cd "$(dirname "$0")/.."
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(tower_limit ace_layer_untimed tokio_semaphore ace_semaphore acquire submit \
    ace_contended tokio_contended two_yields)
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ace-benches --bin icount
out=$(mktemp -d)
# The main thread's instruction count (callgrind's file for thread 1), summed over its events.
ir() {
    valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$out/cg.$1.$2.%p" \
        "$target/release/icount" "$1" "$2" >/dev/null 2>&1
    local f
    f=$(ls "$out"/cg."$1"."$2".*-01 | head -1)
    awk '/^summary:/ { print $2 }' "$f"
}
printf '%-20s %s\n' path 'instructions per call'
# Multiples of 64, so that the contended paths (64 tasks) run exactly this many operations.
for p in "${paths[@]}"; do
    a=$(ir "$p" 2048)
    b=$(ir "$p" 22528)
    printf '%-20s %s\n' "$p" $(( (b - a) / 20480 ))
done
rm -rf "$out"
