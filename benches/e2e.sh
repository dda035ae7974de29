#!/usr/bin/env bash
# End-to-end benchmarks: Cairn side by side with what TheRock CI does today, on the same generated
# data, the same disk and in the same run. Prints one Markdown table of medians with ratios.
#
#   benches/e2e.sh [--scale small|medium|large] [--repeat N] [--smoke] [--work DIR] [--keep]
#
# --scale   size of the generated run: ~200 MB / ~2 GB / ~8 GB of file content (default small)
# --repeat  runs per measurement; the table shows medians (default 3)
# --smoke   CI mode: never fails on timing, only when a bench cannot run (implies --repeat 1)
# --work    working directory (default .cache/bench); generated data is cached there per scale
# --keep    keep the extracted trees and stores after the run
#
# Needs: cargo, python3, tar, zstd, xz, /usr/bin/time. Installs moto + boto3 + pyzstd in .cache/venv.
# Rows that need the `cairn` CLI's bootstrap/fetch/status commands print "n/a (needs cairn
# bootstrap)" when the binary does not have them.
set -euo pipefail

SCALE=small
REPEAT=3
SMOKE=0
KEEP=0
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --work) WORK="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
case "$SCALE" in small|medium|large) ;; *) echo "error: unknown scale \`$SCALE\`" >&2; exit 2 ;; esac
[ "$SMOKE" = 1 ] && REPEAT=1

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
WORK="${WORK:-$CAIRN_CACHE_DIR/bench}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
NCPU="$(nproc)"
STAGE=math-libs
FAMILY=gfx94X-dcgpu
BUCKET=cairn-bench
RUN_ZST=7001
RUN_XZ=7002

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Tools, binaries, data

for t in tar zstd xz python3 /usr/bin/time; do
  command -v "$t" >/dev/null || die "\`$t\` is required"
done
ensure_moto
if ! "$CAIRN_VENV/bin/python" -c 'import pyzstd' 2>/dev/null; then
  log "installing pyzstd into $CAIRN_VENV (TheRock's zstd binding, for the Python baseline)"
  "$CAIRN_VENV/bin/pip" install --quiet --disable-pip-version-check pyzstd
fi
PY="$CAIRN_VENV/bin/python"

log "building release binaries"
cargo build --release --quiet -p cairn-daemon -p cairn-client -p cairn-benches \
  --bin cairnd --bin cairn --bin cairn-bench
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CAIRND="$TARGET_DIR/release/cairnd"
CAIRN="$TARGET_DIR/release/cairn"
BENCH="$TARGET_DIR/release/cairn-bench"

DATA="$WORK/data-$SCALE"
if [ ! -f "$DATA/summary.json" ]; then
  log "generating the $SCALE run into $DATA"
  rm -rf "$DATA"
  start=$(date +%s)
  "$BENCH" gen --out "$DATA" --scale "$SCALE" --stage "$STAGE" --family "$FAMILY" \
    --topology "$ROOT/BUILD_TOPOLOGY.toml" >/dev/null
  log "generated in $(( $(date +%s) - start )) s"
fi
summary() { jq -r ".$1" "$DATA/summary.json"; }

# A CLI with `bootstrap` is needed for the daemon rows.
HAVE_CLI=0
if "$CAIRN" bootstrap --help >/dev/null 2>&1; then HAVE_CLI=1; fi

# ---------------------------------------------------------------------------------------------
# Measurement helpers

RESULTS="$WORK/results-$SCALE.tsv"
: >"$RESULTS"

# Milliseconds of wall time of one command (its output goes to $WORK/last.out).
time_ms() {
  local s e
  s=$(date +%s%N)
  if ! "$@" >"$WORK/last.out" 2>&1; then
    echo "error: benchmark command failed: $*" >&2
    tail -20 "$WORK/last.out" >&2
    exit 2
  fi
  e=$(date +%s%N)
  echo $(( (e - s) / 1000000 ))
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# measure NAME PREPARE CMD...: run PREPARE (untimed) then CMD, REPEAT times; store the median ms.
declare -A MS
measure() {
  local name="$1" prep="$2"; shift 2
  local i samples=()
  for i in $(seq 1 "$REPEAT"); do
    eval "$prep"
    sync
    samples+=("$(time_ms "$@")")
  done
  MS[$name]=$(printf '%s\n' "${samples[@]}" | median)
  printf '%s\t%s\t%s\n' "$name" "${MS[$name]}" "${samples[*]}" >>"$RESULTS"
  log "$name: median ${MS[$name]} ms (${samples[*]})"
}

fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "" || v == "nan") print "n/a"; else if (v < 1000) printf "%.0f ms", v; else printf "%.2f s", v/1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "nan" || b == "nan" || a == 0) print "n/a"; else printf "%.2f×", b/a }'; }
gbps() { awk -v bytes="$1" -v ms="$2" 'BEGIN { if (ms == "" || ms == "nan" || ms == 0) print "n/a"; else printf "%.2f GB/s", bytes/ms/1e6 }'; }

rmtree() { for d in "$@"; do [ -e "$d" ] && { chmod -R u+w "$d" 2>/dev/null || true; rm -rf "$d"; }; done; return 0; }

STAGE_LIST="$DATA/stage-zst.txt"
STAGE_XZ_LIST="$DATA/stage-xz.txt"
STAGE_BYTES=$(summary stage_uncompressed)
T="$WORK/t-$SCALE"
rmtree "$T"
mkdir -p "$T"

# ---------------------------------------------------------------------------------------------
# 1. Warm bootstrap: CAS vs cp -a vs parallel tar

log "warm bootstrap of $STAGE ($(summary stage_archives) archives, $STAGE_BYTES bytes)"
par_tar() { # par_tar LIST DIR DEST
  mkdir -p "$3"
  sed "s|^|$2/|" "$1" | xargs -P "$NCPU" -I{} tar -I zstd -xf {} -C "$3"
}
par_tar_xz() {
  mkdir -p "$3"
  sed "s|^|$2/|" "$1" | xargs -P "$NCPU" -I{} tar -xJf {} -C "$3"
}
measure tar_zst "rmtree $T/tar" par_tar "$STAGE_LIST" "$DATA/run" "$T/tar"
# The tree tar left is the source of cp -a (same files, same disk).
measure cp_a "rmtree $T/cp" cp -a "$T/tar" "$T/cp"
rmtree "$T/cp"

STORE="$T/store"
"$BENCH" ingest --store "$STORE" $(sed "s|^|$DATA/run/|" "$STAGE_LIST") >/dev/null
measure cairn_lib_warm "rmtree $T/lib" "$BENCH" materialize --store "$STORE" --keys "$STAGE_LIST" --dest "$T/lib"
# Same result as tar: every file of the tar tree is in the materialized one, byte for byte.
if ! diff -r --no-dereference -x artifact_manifest.txt -x '*.prebuilt' -x .cairn-state.json "$T/tar" "$T/lib" >/dev/null; then
  die "the CAS materialization differs from tar's extraction"
fi
rmtree "$T/lib" "$T/tar"

# ---------------------------------------------------------------------------------------------
# 2/3. Cold fetch + extract from S3: Cairn vs TheRock's Python approach (zst and xz)

start_moto
trap 'stop_moto; [ -n "${CAIRND_PID:-}" ] && kill "$CAIRND_PID" 2>/dev/null; true' EXIT
ENDPOINT="$CAIRN_TEST_S3_ENDPOINT"
log "uploading the run to $ENDPOINT (bucket $BUCKET)"
"$PY" benches/baseline_fetch.py upload --endpoint "$ENDPOINT" --bucket "$BUCKET" --prefix "$RUN_ZST-linux" "$DATA/run" >/dev/null
"$PY" benches/baseline_fetch.py upload --endpoint "$ENDPOINT" --bucket "$BUCKET" --prefix "$RUN_XZ-linux" "$DATA/xz" >/dev/null

measure py_cold_zst "rmtree $T/py" "$PY" benches/baseline_fetch.py fetch --endpoint "$ENDPOINT" \
  --bucket "$BUCKET" --prefix "$RUN_ZST-linux" --names "$STAGE_LIST" --output-dir "$T/py"
rmtree "$T/py"
measure py_cold_xz "rmtree $T/py" "$PY" benches/baseline_fetch.py fetch --endpoint "$ENDPOINT" \
  --bucket "$BUCKET" --prefix "$RUN_XZ-linux" --names "$STAGE_XZ_LIST" --output-dir "$T/py"
rmtree "$T/py"
measure tar_xz "rmtree $T/tarxz" par_tar_xz "$STAGE_XZ_LIST" "$DATA/xz" "$T/tarxz"
rmtree "$T/tarxz"

# Daemon rows (cold/warm through cairnd, concurrency, resolve) come from cli_rows when available.
CLI_ROWS="$ROOT/benches/cli_rows.sh"
if [ "$HAVE_CLI" = 1 ] && [ -f "$CLI_ROWS" ]; then
  # shellcheck source=cli_rows.sh
  source "$CLI_ROWS"
else
  log "cairn bootstrap is not available: daemon rows are n/a"
fi

# ---------------------------------------------------------------------------------------------
# 6. Dedup: the stage's `_generic` outputs republished by 4 family jobs vs 1

log "dedup: $(summary republish_archives) _generic archives x 1 job vs x 4 jobs"
one=$("$BENCH" ingest --store "$T/dedup1" $(sed "s|^|$DATA/republish/job1/|" "$DATA/republish.txt") | sed 's/.*=//')
four=$(for j in 1 2 3 4; do sed "s|^|$DATA/republish/job$j/|" "$DATA/republish.txt"; done | xargs "$BENCH" ingest --store "$T/dedup4" | sed 's/.*=//')
DEDUP_ONE=$(du -sb "$T/dedup1/cas-v1/blobs" | cut -f1)
DEDUP_FOUR=$(du -sb "$T/dedup4/cas-v1/blobs" | cut -f1)
log "dedup: new blob bytes 1 job $one, 4 jobs $four; blobs dir $DEDUP_ONE vs $DEDUP_FOUR"
rmtree "$T/dedup1" "$T/dedup4"

# ---------------------------------------------------------------------------------------------
# 7. Peak RSS of cairnd ingesting the largest archive (and one a tenth its size)

rss_kb() { # rss_kb ARCHIVE
  local s="$T/rss-store"
  rmtree "$s"
  /usr/bin/time -v "$CAIRND" ingest --store "$s" "$1" 2>"$T/time.out" >/dev/null || { cat "$T/time.out" >&2; die "cairnd ingest failed"; }
  rmtree "$s"
  awk -F': ' '/Maximum resident set size/ {print $2}' "$T/time.out"
}
RSS_BIG=$(rss_kb "$DATA/run/$(summary largest_archive)")
RSS_TENTH=$(rss_kb "$DATA/run/$(summary tenth_archive)")
log "peak RSS: $RSS_BIG kB ($(summary largest_archive)), $RSS_TENTH kB ($(summary tenth_archive))"

# ---------------------------------------------------------------------------------------------
# The table

mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b/1e6 }'; }
v() { echo "${MS[$1]:-}"; }
na_cli="n/a (needs cairn bootstrap)"
cell_or_na() { if [ -n "$(v "$1")" ]; then fmt_ms "$(v "$1")"; else echo "$na_cli"; fi; }

{
  echo
  echo "Cairn benchmarks — scale \`$SCALE\`, median of $REPEAT, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Machine: $NCPU cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(df -T "$WORK" | awk 'NR==2 {print $2}') on $(df "$WORK" | awk 'NR==2 {print $1}')"
  echo "Run: $(summary run_archives) archives, $(mb "$(summary run_uncompressed)") content, $(mb "$(summary run_compressed)") .tar.zst; stage \`$STAGE\` ($FAMILY): $(summary stage_archives) archives, $(summary stage_files) files, $(mb "$STAGE_BYTES") content, $(mb "$(summary stage_zst)") zst, $(mb "$(summary stage_xz)") xz"
  echo
  echo "| Measurement | Cairn | Baseline | Ratio (baseline / Cairn) | Target |"
  echo "|---|---|---|---|---|"
  echo "| Warm bootstrap, library (CAS → build dir) vs \`cp -a\` | $(fmt_ms "$(v cairn_lib_warm)") ($(gbps "$STAGE_BYTES" "$(v cairn_lib_warm)")) | $(fmt_ms "$(v cp_a)") | $(ratio "$(v cairn_lib_warm)" "$(v cp_a)") | ≥ 0.67× (≤ 1.5× cp -a) |"
  echo "| Warm bootstrap, library vs parallel \`tar -I zstd -xf\` (-P $NCPU) | $(fmt_ms "$(v cairn_lib_warm)") | $(fmt_ms "$(v tar_zst)") | $(ratio "$(v cairn_lib_warm)" "$(v tar_zst)") | ≥ 3× |"
  echo "| Warm \`cairn bootstrap\` (daemon) vs \`cp -a\` | $(cell_or_na cairn_warm) | $(fmt_ms "$(v cp_a)") | $(ratio "$(v cairn_warm)" "$(v cp_a)") | ≥ 0.67× |"
  echo "| Warm \`cairn bootstrap\` (daemon) vs parallel tar | $(cell_or_na cairn_warm) | $(fmt_ms "$(v tar_zst)") | $(ratio "$(v cairn_warm)" "$(v tar_zst)") | ≥ 3× |"
  echo "| Cold fetch+extract \`.tar.zst\` from S3 vs Python (boto3, 10 downloads, tarfile pool) | $(cell_or_na cairn_cold_zst) | $(fmt_ms "$(v py_cold_zst)") | $(ratio "$(v cairn_cold_zst)" "$(v py_cold_zst)") | ≥ 2× |"
  echo "| Cold fetch+extract \`.tar.xz\` from S3 vs Python | $(cell_or_na cairn_cold_xz) | $(fmt_ms "$(v py_cold_xz)") | $(ratio "$(v cairn_cold_xz)" "$(v py_cold_xz)") | ≥ 2× |"
  echo "| Parallel \`tar -xJf\` of the same \`.tar.xz\` (local, no download) | — | $(fmt_ms "$(v tar_xz)") | — | — |"
  echo "| 8 concurrent cold bootstraps vs 1 (wall time) | $(cell_or_na cairn_cold8) | $(cell_or_na cairn_cold_zst) | $(ratio "$(v cairn_cold_zst)" "$(v cairn_cold8)") (8 vs 1) | ≈ 1× |"
  echo "| Storage GETs per object, 8 concurrent bootstraps | ${GETS_PER_OBJECT:-$na_cli} | — | — | ≈ 1 download/object |"
  echo "| Resolve of the whole stage, warm | $(cell_or_na resolve_warm) | — | — | < 5 ms |"
  echo "| Resolve of the whole stage, cold | $(cell_or_na resolve_cold) | — | — | 1 LIST per unknown fingerprint |"
  echo "| CAS bytes: \`_generic\` outputs republished by 4 jobs vs 1 | $(mb "$DEDUP_FOUR") | $(mb "$DEDUP_ONE") | +$((DEDUP_FOUR - DEDUP_ONE)) bytes | +0 bytes |"
  echo "| Peak RSS of \`cairnd ingest\`, largest archive ($(mb "$(summary largest_uncompressed)")) vs one ~1/10 its size ($(mb "$(summary tenth_uncompressed)")) | $((RSS_BIG / 1024)) MB | $((RSS_TENTH / 1024)) MB | $(awk -v a="$RSS_BIG" -v b="$RSS_TENTH" 'BEGIN {printf "%.2f×", a/b}') | independent of size |"
  echo
  echo "Raw samples (ms): $RESULTS"
} | tee "$WORK/table-$SCALE.md"

if [ "$KEEP" = 0 ]; then rmtree "$T"; fi
