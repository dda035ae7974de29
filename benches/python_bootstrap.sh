#!/usr/bin/env bash
# Bootstrap through the `cairn` Python package vs through the `cairn` CLI, on the same data and the
# same daemon: a checkout over TheRock's real topology (cairn-demo-data), the compiler-runtime
# stage published once, then math-libs' inbound artifacts bootstrapped from the warm CAS into a
# fresh build dir, alternating CLI and Python, each a whole process (`cairn bootstrap` vs
# `python -c 'import cairn; cairn.Client().bootstrap(...)'`). Prints the medians and the ratio
# (target: Python <= 1.1x the CLI).
#
#   benches/python_bootstrap.sh [--repeat N] [--bytes B] [--release]
#
# The default profile is dev (shares the debug build with scripts/test; the hot paths are optimised
# in dev builds); --release builds both sides in release. Needs: cargo, python3 with venv, PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
REPEAT=5
BYTES=$((1 << 20))
PROFILE=dev
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT="$2"; shift 2 ;;
    --bytes) BYTES="$2"; shift 2 ;;
    --release) PROFILE=release; shift ;;
    *) echo "usage: $0 [--repeat N] [--bytes B] [--release]" >&2; exit 2 ;;
  esac
done
DIR=debug; FLAG=()
[ "$PROFILE" = release ] && { DIR=release; FLAG=(--release); }

echo "== building cairnd, cairn, cairn-demo-data ($PROFILE)" >&2
cargo build "${FLAG[@]}" --quiet -p cairn-daemon --bin cairnd -p cairn-client --bin cairn \
  -p cairn-testkit --bin cairn-demo-data
TARGET="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET/$DIR"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cairn-pybench.XXXXXX")
chmod 700 "$WORK"
DAEMON_PID=""
cleanup() {
  [ -n "$DAEMON_PID" ] && { kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== venv + pip install ./python ($PROFILE)" >&2
python3 -m venv "$WORK/venv"
CARGO_TARGET_DIR="$TARGET" MATURIN_PEP517_ARGS="--profile $PROFILE" \
  "$WORK/venv/bin/pip" install --quiet --disable-pip-version-check ./python

echo "== data: checkout over the real topology, compiler-runtime published ($BYTES bytes per lib/dev)" >&2
C=$("$BIN/cairn-demo-data" checkout "$WORK/src" --topology "$ROOT/BUILD_TOPOLOGY.toml")
"$BIN/cairn-demo-data" build-dir --checkout "$C" --stage compiler-runtime --family generic \
  --out "$WORK/ci" --bytes "$BYTES" >/dev/null
"$BIN/cairnd" serve --store "$WORK/store" --local-storage "$WORK/bucket" --socket "$WORK/run/d.sock" \
  2>"$WORK/cairnd.log" &
DAEMON_PID=$!
for _ in $(seq 1 200); do grep -q "listening on unix:" "$WORK/cairnd.log" && break; sleep 0.05; done
export CAIRN_SOCKET="unix:$WORK/run/d.sock"
"$BIN/cairn" push --quiet --checkout "$C" --stage compiler-runtime --family generic \
  --build-dir "$WORK/ci" --run-id 9001 --platform linux
rm -rf "$WORK/ci"
sel=(--checkout "$C" --stage math-libs --family gfx94X-dcgpu --platform linux)
"$BIN/cairn" bootstrap --quiet "${sel[@]}" --build-dir "$WORK/warmup" >/dev/null   # makes the CAS warm
rm -rf "$WORK/warmup"

cli() { "$BIN/cairn" bootstrap --quiet "${sel[@]}" --build-dir "$1"; }
py() {
  "$WORK/venv/bin/python" -c 'import sys, cairn
cairn.Client().bootstrap("math-libs", "gfx94X-dcgpu", sys.argv[2], checkout=sys.argv[1], platform="linux")' "$C" "$1"
}
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: >"$WORK/cli.ms"; : >"$WORK/py.ms"
for i in $(seq 1 "$REPEAT"); do
  ms cli "$WORK/b-cli-$i" >>"$WORK/cli.ms"
  ms py "$WORK/b-py-$i" >>"$WORK/py.ms"
  diff -r --no-dereference -x .cairn-state.json "$WORK/b-cli-$i" "$WORK/b-py-$i" >/dev/null \
    || { echo "error: the Python bootstrap differs from the CLI's" >&2; exit 1; }
  rm -rf "$WORK/b-cli-$i" "$WORK/b-py-$i"
done
files=$("$BIN/cairn" --json bootstrap --quiet "${sel[@]}" --build-dir "$WORK/count" | python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print(s["artifacts"], s["files"], s["bytes"])')
CLI=$(median <"$WORK/cli.ms"); PY=$(median <"$WORK/py.ms")
echo "warm bootstrap of math-libs (gfx94X-dcgpu), $PROFILE, median of $REPEAT; artifacts files bytes: $files"
echo "  cairn CLI:      $CLI ms   (samples: $(tr '\n' ' ' <"$WORK/cli.ms"))"
echo "  Python package: $PY ms   (samples: $(tr '\n' ' ' <"$WORK/py.ms"))"
awk -v p="$PY" -v c="$CLI" 'BEGIN { printf "  ratio Python / CLI: %.2fx (target <= 1.10x)\n", p / c }'
