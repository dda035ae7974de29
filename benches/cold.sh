#!/usr/bin/env bash
# The cold path side by side with TheRock's own fetch: an empty Cairn store bootstrapping one stage
# vs `benches/baseline_fetch.py` (TheRock's `artifact_manager.py fetch --bootstrap`, see its docs),
# on the same generated run, the same disk, samples in alternation. Wall time and CPU seconds per
# process (cairn client, cairnd, the Python fetcher; the S3 server's CPU is shown apart: a CI runner
# does not pay it). Prints one Markdown table of medians with ratios.
#
#   benches/cold.sh [--scale small|medium|bigfile] [--repeat N] [--smoke] [--work DIR]
#                   [--sources s3,local] [--compressions zst,xz] [--s3-server moto|s3s]
#
# --scale          data shape and size (default bigfile: ~1 GB stage in ~9k files, ≈1.6× zstd-3;
#                  medium: ~0.9 GB in ~43k mostly small files, 3–4×); cached under --work
# --repeat         samples per row (default 5); medians are reported
# --smoke          CI mode: --repeat 1, debug build, never fails on timing
# --sources        where the run is read from: s3 (over loopback, see --s3-server), local (a local staging
#                  directory, TheRock's THEROCK_LOCAL_STAGING_DIR) (default both)
# --compressions   zst, xz (default both)
# --s3-server      moto (the tests' S3 server; default) or s3s (`cairn-bench s3-server`, s3s-fs over
#                  a directory): moto reads a whole object for every ranged GET, ~7 CPU-s per
#                  bigfile fetch on the cores being measured; s3s reads each range from its file
#
# Needs: cargo, python3, jq, /usr/bin/time. Installs moto + boto3 + pyzstd in .cache/venv.
set -euo pipefail

SCALE=bigfile
REPEAT=5
SMOKE=0
WORK=""
SOURCES=s3,local
COMPRESSIONS=zst,xz
S3_SERVER=moto
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --work) WORK="$2"; shift 2 ;;
    --sources) SOURCES="$2"; shift 2 ;;
    --compressions) COMPRESSIONS="$2"; shift 2 ;;
    --s3-server) S3_SERVER="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
case "$SCALE" in small|medium|large|bigfile) ;; *) echo "error: unknown scale \`$SCALE\` (small, medium, large, bigfile)" >&2; exit 2 ;; esac
for s in ${SOURCES//,/ }; do case "$s" in s3|local) ;; *) echo "error: unknown source \`$s\` (s3, local)" >&2; exit 2 ;; esac; done
for c in ${COMPRESSIONS//,/ }; do case "$c" in zst|xz) ;; *) echo "error: unknown compression \`$c\` (zst, xz)" >&2; exit 2 ;; esac; done
case "$S3_SERVER" in moto|s3s) ;; *) echo "error: unknown S3 server \`$S3_SERVER\` (moto, s3s)" >&2; exit 2 ;; esac
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
BUCKET=cairn-cold
RUN=7201
TOPOLOGY="$ROOT/BUILD_TOPOLOGY.toml"
TICKS=$(getconf CLK_TCK)

log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }

for t in python3 jq /usr/bin/time; do command -v "$t" >/dev/null || die "\`$t\` is required"; done
ensure_bench_python

PROFILE=release
[ "$SMOKE" = 1 ] && PROFILE=debug
build_bench_binaries "$PROFILE"

DATA="$WORK/data-$SCALE"
if [ ! -f "$DATA/summary.json" ] || [ ! -f "$DATA/stage-xz.txt" ]; then
  log "generating the $SCALE run into $DATA (once; xz of the stage takes minutes at bigfile)"
  rm -rf "$DATA"
  "$BENCH" gen --out "$DATA" --scale "$SCALE" --stage "$STAGE" --family "$FAMILY" \
    --topology "$TOPOLOGY" >/dev/null
fi
summary() { jq -r ".$1" "$DATA/summary.json"; }

T="$WORK/cold-$SCALE"
rm -rf "$T"
mkdir -p "$T"
# A staging directory in TheRock's layout: {dir}/{run}-linux/{archive}, the stage's archives only.
STAGING="$T/staging"
mkdir -p "$STAGING/$RUN-linux" "$STAGING/$((RUN + 1))-linux"
while read -r a; do ln "$DATA/run/$a" "$DATA/run/$a.sha256sum" "$STAGING/$RUN-linux/"; done <"$DATA/stage-zst.txt"
while read -r a; do ln "$DATA/xz/$a" "$DATA/xz/$a.sha256sum" "$STAGING/$((RUN + 1))-linux/"; done <"$DATA/stage-xz.txt"

wants_source() { [[ ",$SOURCES," == *",$1,"* ]]; }
# The S3 server's pid (its CPU is reported apart) and how to start it; both set
# CAIRN_TEST_S3_ENDPOINT and the credentials.
S3_PID=""
start_s3_server() {
  case "$S3_SERVER" in
    moto) MOTO_PID=""; start_moto; S3_PID="$MOTO_PID" ;;
    s3s)
      export_test_s3_credentials
      mkdir -p "$T/s3s"
      "$BENCH" s3-server --root "$T/s3s/data" --endpoint-file "$T/s3s/endpoint" >"$T/s3s.log" 2>&1 &
      S3_PID=$!
      for _ in $(seq 1 400); do
        [ -s "$T/s3s/endpoint" ] && break
        kill -0 "$S3_PID" 2>/dev/null || { cat "$T/s3s.log" >&2; die "the s3s server exited"; }
        sleep 0.05
      done
      [ -s "$T/s3s/endpoint" ] || die "the s3s server did not listen within 20 s; see $T/s3s.log"
      CAIRN_TEST_S3_ENDPOINT="$(cat "$T/s3s/endpoint")"
      export CAIRN_TEST_S3_ENDPOINT
      ;;
  esac
}
cleanup() {
  [ -n "${DPID:-}" ] && { kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; }
  [ -n "$S3_PID" ] && { kill "$S3_PID" 2>/dev/null || true; wait "$S3_PID" 2>/dev/null || true; }
  return 0
}
trap cleanup EXIT
if wants_source s3; then
  start_s3_server
  log "uploading the stage's archives to $CAIRN_TEST_S3_ENDPOINT"
  "$PY" benches/baseline_fetch.py upload --endpoint "$CAIRN_TEST_S3_ENDPOINT" --bucket "$BUCKET" \
    --prefix "$RUN-linux" --list "$DATA/stage-zst.txt" "$DATA/run" >/dev/null
  "$PY" benches/baseline_fetch.py upload --endpoint "$CAIRN_TEST_S3_ENDPOINT" --bucket "$BUCKET" \
    --prefix "$((RUN + 1))-linux" --list "$DATA/stage-xz.txt" "$DATA/xz" >/dev/null
fi

# CPU seconds (user + system) a live process has used so far.
cpu_of() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }

DPID=""
start_cairnd() { # SOURCE
  local storage=()
  case "$1" in
    s3) storage=(--s3-endpoint "$CAIRN_TEST_S3_ENDPOINT" --s3-bucket "$BUCKET") ;;
    local) storage=(--local-storage "$STAGING") ;;
  esac
  discard "$T/store"
  RUST_LOG=warn "$CAIRND" serve --store "$T/store" --socket "$T/run/d.sock" "${storage[@]}" >"$T/cairnd.log" 2>&1 &
  DPID=$!
  for _ in $(seq 1 400); do
    "$CAIRN" --daemon "unix:$T/run/d.sock" --quiet status >/dev/null 2>&1 && return 0
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$T/cairnd.log" >&2
  die "cairnd did not start"
}
stop_cairnd() { kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; DPID=""; }

# Ext4 slows file creation for about a minute after mass deletions (see benches/e2e.sh): trees are
# renamed into a trash directory between samples and deleted only at the end.
TRASH="$T/trash"
mkdir -p "$TRASH"
discard() { for d in "$@"; do [ -e "$d" ] && mv "$d" "$TRASH/$(date +%s%N)-$RANDOM"; done; return 0; }

RESULTS="$T/results.tsv"
: >"$RESULTS"
# record ROW WALL_S CLIENT_CPU DAEMON_CPU SERVER_CPU
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; log "$1: wall $2 s, client $3 + daemon $4 CPU-s (S3 server $5)"; }

# time_cmd OUT CMD...: run CMD, leaving "wall user sys" in OUT.
time_cmd() {
  local out="$1"; shift
  if ! /usr/bin/time -f '%e %U %S' -o "$out" "$@" >"$T/last.out" 2>"$T/last.err"; then
    tail -20 "$T/last.err" >&2
    die "benchmark command failed: $*"
  fi
}

run_cairn() { # SOURCE COMP
  local src="$1" comp="$2" run=$RUN
  [ "$comp" = xz ] && run=$((RUN + 1))
  discard "$T/out"
  start_cairnd "$src"
  sync
  local s0=0; [ -n "$S3_PID" ] && s0=$(cpu_of "$S3_PID")
  time_cmd "$T/time.txt" "$CAIRN" --daemon "unix:$T/run/d.sock" --quiet bootstrap --stage "$STAGE" \
    --family "$FAMILY" --run-id "$run" --topology "$TOPOLOGY" ${EXCLUDED:+--exclude-artifacts "$EXCLUDED"} \
    --build-dir "$T/out"
  local d; d=$(cpu_of "$DPID")
  local s=0; [ -n "$S3_PID" ] && s=$(awk -v a="$(cpu_of "$S3_PID")" -v b="$s0" 'BEGIN { printf "%.2f", a - b }')
  stop_cairnd
  read -r wall user sys <"$T/time.txt"
  record "cairn_${src}_${comp}" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" "$d" "$s"
}

run_therock() { # SOURCE COMP
  local src="$1" comp="$2" run=$RUN list="$DATA/stage-zst.txt"
  [ "$comp" = xz ] && { run=$((RUN + 1)); list="$DATA/stage-xz.txt"; }
  discard "$T/out"
  local from=()
  case "$src" in
    s3) from=(--endpoint "$CAIRN_TEST_S3_ENDPOINT" --bucket "$BUCKET") ;;
    local) from=(--local-staging-dir "$STAGING") ;;
  esac
  sync
  local s0=0; [ -n "$S3_PID" ] && s0=$(cpu_of "$S3_PID")
  time_cmd "$T/time.txt" "$PY" benches/baseline_fetch.py fetch "${from[@]}" --prefix "$run-linux" \
    --names "$list" --output-dir "$T/out"
  local s=0; [ -n "$S3_PID" ] && s=$(awk -v a="$(cpu_of "$S3_PID")" -v b="$s0" 'BEGIN { printf "%.2f", a - b }')
  read -r wall user sys <"$T/time.txt"
  record "therock_${src}_${comp}" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')" 0 "$s"
}

# Both sides must leave the same tree (TheRock's bootstrap layout), checked once per row.
same_tree() { # SOURCE COMP
  run_therock "$1" "$2"; mv "$T/out" "$T/expected"
  run_cairn "$1" "$2"
  # Cairn's own state file is the one allowed difference (see ARCHITECTURE.md, "the build dir's state").
  diff -r --no-dereference -x .cairn-state.json "$T/expected" "$T/out" >"$T/diff.txt" || die "cairn's tree differs from TheRock's ($1, $2): see $T/diff.txt"
  # Modes too (TheRock: the umask's default plus the archive's execute bits).
  modes() { (cd "$1" && find . ! -name .cairn-state.json -printf '%p %y %m\n' | sort); }
  diff <(modes "$T/expected") <(modes "$T/out") >"$T/diff.txt" || die "cairn's file modes differ from TheRock's ($1, $2): see $T/diff.txt"
  discard "$T/expected" "$T/out"
  : >"$RESULTS.check"
}

# Inbound artifacts TheRock does not build on Linux (core-hipinfo) are left out, as TheRock's fetch
# silently does.
sed 's/_.*//' "$DATA/stage-zst.txt" | sort -u >"$T/stage-names.txt"
EXCLUDED="$("$CAIRN" --topology "$TOPOLOGY" topology inbound --stage "$STAGE" \
  | awk '{print $1}' | grep -vxF -f "$T/stage-names.txt" | paste -sd, -)"

log "cold bootstrap of $STAGE ($FAMILY): $(summary stage_archives) archives, $(summary stage_files) files, $(summary stage_uncompressed) bytes"
for src in ${SOURCES//,/ }; do
  for comp in ${COMPRESSIONS//,/ }; do
    same_tree "$src" "$comp"
  done
done
: >"$RESULTS"
# A round's trees (GBs at bigfile) are deleted after it, then ext4's window is waited out.
empty_trash() {
  rm -rf "$TRASH"; mkdir -p "$TRASH"; sync
  if [ "$SMOKE" = 0 ]; then log "trash emptied: waiting 65 s for ext4's recently-deleted-inode window"; sleep 65; fi
}
empty_trash
for round in $(seq 1 "$REPEAT"); do
  for src in ${SOURCES//,/ }; do
    for comp in ${COMPRESSIONS//,/ }; do
      run_therock "$src" "$comp"
      run_cairn "$src" "$comp"
    done
  done
  discard "$T/out"
  [ "$round" -lt "$REPEAT" ] && empty_trash
done
discard "$T/out"

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# med ROW COLUMN(2 wall, 3 client, 4 daemon, 5 server)
med() { awk -F'\t' -v r="$1" -v c="$2" '$1 == r {print $c}' "$RESULTS" | median; }
mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b/1e6 }'; }
{
  echo
  echo "Cold bootstrap vs TheRock's fetch — scale \`$SCALE\`, median of $REPEAT alternating samples, $PROFILE build, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(df -T "$WORK" | awk 'NR==2 {print $2}')"
  wants_source s3 && echo "S3 server: $S3_SERVER"
  echo "Stage \`$STAGE\` ($FAMILY): $(summary stage_archives) archives, $(summary stage_files) files, $(mb "$(summary stage_uncompressed)") content, $(mb "$(summary stage_zst)") zst, $(mb "$(summary stage_xz)") xz"
  echo
  echo "| Source, compression | TheRock wall | TheRock CPU-s | Cairn wall | Cairn CPU-s (client + cairnd) | Wall ratio (TheRock / Cairn) | CPU ratio | S3 server CPU-s (TheRock / Cairn) |"
  echo "|---|---|---|---|---|---|---|---|"
  for src in ${SOURCES//,/ }; do
    for comp in ${COMPRESSIONS//,/ }; do
      tw=$(med "therock_${src}_${comp}" 2); tc=$(med "therock_${src}_${comp}" 3)
      cw=$(med "cairn_${src}_${comp}" 2); cc=$(med "cairn_${src}_${comp}" 3); cd=$(med "cairn_${src}_${comp}" 4)
      ts=$(med "therock_${src}_${comp}" 5); cs=$(med "cairn_${src}_${comp}" 5)
      awk -v src="$src" -v comp="$comp" -v tw="$tw" -v tc="$tc" -v cw="$cw" -v cc="$cc" -v cd="$cd" -v ts="$ts" -v cs="$cs" 'BEGIN {
        printf "| %s, `.tar.%s` | %.2f s | %.2f | %.2f s | %.2f (%.2f + %.2f) | %.2f× | %.2f× | %s |\n",
          src, comp, tw, tc, cw, cc + cd, cc, cd, tw / cw, tc / (cc + cd), (src == "s3" ? sprintf("%.2f / %.2f", ts, cs) : "—")
      }'
    done
  done
  echo
  echo "Raw samples (row, wall s, client CPU-s, cairnd CPU-s, S3 server CPU-s): $RESULTS"
} | tee "$T/table.md"
rm -rf "$TRASH"
