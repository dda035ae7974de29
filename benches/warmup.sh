#!/usr/bin/env bash
# Predictive warm-up: how long after a run is published a second daemon with `[warmup]` has it
# local, and what that buys the next job: its `cairn bootstrap` against the warmed daemon vs the same
# bootstrap against a daemon with an empty store. Storage is moto over loopback; every daemon has
# its own store, like separate machines sharing a bucket. Prints one Markdown table of medians.
#
#   benches/warmup.sh [--scale small|medium] [--repeat N] [--smoke] [--work DIR]
#
# --scale    data shape (default small: ~200 MB of content in many files; tests/src/scale.rs)
# --repeat   rounds (default 3); each round publishes a new run on its own branch, so the follower
#            (fresh store) sees exactly one new run
# --smoke    CI mode: --repeat 1, debug build, never fails on timing
#
# Per round: a follower daemon (warm-up on, interval 0.5 s) is started on a fresh store; the
# publisher daemon pushes every stage producing the bootstrapped stage's inbound artifacts with
# `--branch`; "publish → warm" is from the end of the last push to the moment the follower's
# `prefetched_archives` stops growing (confirmed by two more polls). Then the job: `cairn
# bootstrap` of the stage against the follower (warm) and against a fresh daemon (cold).
#
# Needs: cargo, python3, jq. Installs moto + boto3 in .cache/venv.
set -euo pipefail

SCALE=small
REPEAT=3
SMOKE=0
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
case "$SCALE" in small|medium) ;; *) echo "error: unknown scale \`$SCALE\` (small, medium)" >&2; exit 2 ;; esac
[ "$SMOKE" = 1 ] && REPEAT=1

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
WORK="${WORK:-$CAIRN_CACHE_DIR/bench}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
STAGE=math-libs
FAMILY=gfx94X-dcgpu
BUCKET=cairn-warmup
TOPOLOGY="$ROOT/BUILD_TOPOLOGY.toml"

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }

for t in python3 jq; do command -v "$t" >/dev/null || die "\`$t\` is required"; done
ensure_bench_python

PROFILE=release
[ "$SMOKE" = 1 ] && PROFILE=debug
build_bench_binaries "$PROFILE"

DATA="$WORK/data-$SCALE"
if [ ! -f "$DATA/summary.json" ]; then
  log "generating the $SCALE run into $DATA (once)"
  rm -rf "$DATA"
  "$BENCH" gen --out "$DATA" --scale "$SCALE" --stage "$STAGE" --family "$FAMILY" \
    --topology "$TOPOLOGY" >/dev/null
fi
summary() { jq -r ".$1" "$DATA/summary.json"; }
STAGE_LIST="$DATA/stage-zst.txt"

T="$WORK/warmup-$SCALE"
rm -rf "$T"
mkdir -p "$T/run"
chmod 0700 "$T/run"

declare -A DPID
cleanup() {
  for p in "${DPID[@]}"; do [ -n "$p" ] && { kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }; done
  stop_moto
}
trap cleanup EXIT
start_moto
# Creates the bucket (nothing uploaded: the publisher pushes).
"$PY" benches/baseline_fetch.py upload --endpoint "$CAIRN_TEST_S3_ENDPOINT" --bucket "$BUCKET" \
  --prefix none --list /dev/null "$DATA/run" >/dev/null

cn() { local name="$1"; shift; "$CAIRN" --daemon "unix:$T/run/$name.sock" --quiet "$@"; }
start_cairnd() { # NAME [CONFIG]
  local name="$1" config=()
  [ -n "${2:-}" ] && config=(--config "$2")
  rm -rf "$T/$name-store"
  RUST_LOG="${RUST_LOG:-warn}" "$CAIRND" serve --store "$T/$name-store" --socket "$T/run/$name.sock" \
    --s3-endpoint "$CAIRN_TEST_S3_ENDPOINT" --s3-bucket "$BUCKET" "${config[@]}" >"$T/$name.log" 2>&1 &
  DPID[$name]=$!
  for _ in $(seq 1 400); do
    cn "$name" status >/dev/null 2>&1 && return 0
    kill -0 "${DPID[$name]}" 2>/dev/null || break
    sleep 0.05
  done
  cat "$T/$name.log" >&2
  die "cairnd ($name) did not start"
}
stop_cairnd() {
  local pid="${DPID[$1]:-}"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  DPID[$1]=""
}
warm() { cn "$1" --json status | jq -r ".warmup.$2"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

log "checkout and build dir"
SRC="$("$BENCH" checkout --out "$T/src" --topology "$TOPOLOGY")"
"$BENCH" dirs --out "$T/build" --list "$STAGE_LIST" --scale "$SCALE" --family "$FAMILY" \
  --topology "$TOPOLOGY" >/dev/null
sed 's/_.*//' "$STAGE_LIST" | sort -u >"$T/stage-names.txt"
PRODUCERS=()
for st in $("$CAIRN" --topology "$TOPOLOGY" topology stages | awk '{print $1}'); do
  if "$CAIRN" --topology "$TOPOLOGY" topology produced --stage "$st" | awk '{print $1}' \
      | grep -qxF -f "$T/stage-names.txt"; then
    PRODUCERS+=("$st")
  fi
done
# Inbound artifacts the generated run does not have (core-hipinfo) are left out, as in e2e.sh.
EXCLUDED="$("$CAIRN" --topology "$TOPOLOGY" topology inbound --stage "$STAGE" \
  | awk '{print $1}' | grep -vxF -f "$T/stage-names.txt" | paste -sd, -)"
boot() { # NAME DEST
  cn "$1" --json bootstrap --stage "$STAGE" --family "$FAMILY" --checkout "$SRC" \
    ${EXCLUDED:+--exclude-artifacts "$EXCLUDED"} --build-dir "$2"
}

start_cairnd pub
RESULTS="$T/results.tsv"
: >"$RESULTS"
for round in $(seq 1 "$REPEAT"); do
  run=$((7300 + round))
  branch="bench-$round"
  cat >"$T/warm.toml" <<EOF
[warmup]
enabled = true
branches = ["ROCm/TheRock:$branch"]
stages = ["$STAGE"]
families = ["$FAMILY"]
topology = "$TOPOLOGY"
interval = 0.5
EOF
  start_cairnd warm "$T/warm.toml"
  log "round $round: pushing run $run on branch $branch (${PRODUCERS[*]})"
  p0=$(now_ms)
  for st in "${PRODUCERS[@]}"; do
    cn pub push --stage "$st" --family generic --build-dir "$T/build" --run-id "$run" \
      --checkout "$SRC" --branch "$branch" >/dev/null
  done
  p1=$(now_ms)
  polls=$(warm warm polls)
  last=-1; last_change=$p1
  while :; do
    n=$(warm warm prefetched_archives)
    t=$(now_ms)
    if [ "$n" != "$last" ]; then last=$n; last_change=$t; fi
    [ "$(warm warm polls)" -ge $((polls + 2)) ] && [ "$(warm warm "last_run[\"ROCm/TheRock:$branch\"]")" = "$run" ] \
      && [ $((t - last_change)) -gt 1000 ] && break
    [ $((t - p1)) -gt 600000 ] && die "the follower did not warm run $run within 600 s; see $T/warm.log"
    sleep 0.1
  done
  bytes=$(warm warm prefetched_bytes)
  warm_ms=$((last_change - p1)); [ "$warm_ms" -lt 0 ] && warm_ms=0
  rm -rf "$T/job-warm" "$T/job-cold"
  w0=$(now_ms); boot warm "$T/job-warm" >"$T/warm.json"; w1=$(now_ms)
  start_cairnd cold
  c0=$(now_ms); boot cold "$T/job-cold" >"$T/cold.json"; c1=$(now_ms)
  stop_cairnd cold
  stop_cairnd warm
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$((p1 - p0))" "$warm_ms" "$last" "$bytes" \
    "$((w1 - w0))" "$(jq .summary.storage_bytes "$T/warm.json")" "$((c1 - c0))" \
    "$(jq .summary.storage_bytes "$T/cold.json")" >>"$RESULTS"
  log "round $round: publish $((p1 - p0)) ms; publish → warm $warm_ms ms ($last archives, $bytes bytes); bootstrap warm $((w1 - w0)) ms ($(jq .summary.storage_bytes "$T/warm.json") B downloaded), cold $((c1 - c0)) ms"
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { cut -f"$1" "$RESULTS" | median; }
{
  echo
  echo "Predictive warm-up — scale \`$SCALE\`, median of $REPEAT rounds, $PROFILE build, moto over loopback, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GB RAM"
  echo "Stage \`$STAGE\` ($FAMILY): $(summary stage_archives) archives, $(summary stage_files) files, $(summary stage_uncompressed) bytes of content"
  echo
  echo "| Measure | Median |"
  echo "|---|---|"
  echo "| push of the producing stages (${#PRODUCERS[@]} job(s)) | $(med 2) ms |"
  echo "| end of publish → follower warm (interval 0.5 s) | $(med 3) ms |"
  echo "| archives / compressed bytes prefetched | $(med 4) / $(med 5) |"
  echo "| job's bootstrap after warm-up | $(med 6) ms, $(med 7) B downloaded |"
  echo "| job's bootstrap cold (empty store) | $(med 8) ms, $(med 9) B downloaded |"
  echo
  echo "Raw rounds (round, push ms, warm ms, archives, bytes, warm boot ms, bytes, cold boot ms, bytes): $RESULTS"
} | tee "$T/table.md"
