#!/usr/bin/env bash
# End-to-end benchmarks: Cairn side by side with what TheRock CI does today, on the same generated
# data, the same disk and in the same run. Prints one Markdown table of medians with ratios.
#
#   benches/e2e.sh [--scale small|medium|large] [--repeat N] [--smoke] [--work DIR] [--keep]
#                  [--only SECTIONS]
#
# --scale   size of the generated run: ~200 MB / ~2 GB / ~8 GB of file content (default small)
# --repeat  runs per measurement; the table shows medians (default 3)
# --smoke   CI mode: never fails on timing, only when a bench cannot run (implies --repeat 1 and
#           the debug profile, which shares its build with scripts/test)
# --work    working directory (default .cache/bench); generated data is cached there per scale
# --keep    keep the extracted trees and stores after the run
# --only    comma-separated sections to run: warm (CAS vs cp -a vs tar), daemon (cold zst/xz vs
#           Python, warm CLI, 8 concurrent, resolve), dedup, rss (default: all); rows of the
#           sections left out print n/a
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
ONLY=warm,daemon,dedup,rss
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --work) WORK="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --only) ONLY="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done
case "$SCALE" in small|medium|large) ;; *) echo "error: unknown scale \`$SCALE\`" >&2; exit 2 ;; esac
[ "$SMOKE" = 1 ] && REPEAT=1
for section in ${ONLY//,/ }; do
  case "$section" in warm|daemon|dedup|rss) ;; *) echo "error: unknown section \`$section\` in --only (warm, daemon, dedup, rss)" >&2; exit 2 ;; esac
done
# wants SECTION: whether --only selected it.
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

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
ensure_bench_python

# Smoke runs use the debug profile: it shares the build with scripts/test and the hot paths are
# optimised in dev builds anyway (root Cargo.toml); timed runs use release.
PROFILE=release
[ "$SMOKE" = 1 ] && PROFILE=debug
build_bench_binaries "$PROFILE"

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

# sample NAME PREPARE CMD...: run PREPARE (untimed), then time CMD once and record the sample.
# Rows compared with each other are sampled in alternation (one round = one sample of each), so a
# change in machine load during the run hits both sides of a ratio alike.
declare -A MS SAMPLES
sample() {
  local name="$1" prep="$2"; shift 2
  eval "$prep"
  sync
  local ms; ms="$(time_ms "$@")"
  SAMPLES[$name]="${SAMPLES[$name]:-} $ms"
  MS[$name]=$(printf '%s\n' ${SAMPLES[$name]} | median)
  log "$name: $ms ms"
}
write_results() {
  local name
  for name in "${!SAMPLES[@]}"; do
    printf '%s\t%s\t%s\n' "$name" "${MS[$name]}" "${SAMPLES[$name]# }" >>"$RESULTS"
  done
}

fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "" || v == "nan") print "n/a"; else if (v < 10) printf "%.2f ms", v; else if (v < 1000) printf "%.0f ms", v; else printf "%.2f s", v/1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "nan" || b == "nan" || a == 0) print "n/a"; else printf "%.2f×", b/a }'; }
gbps() { awk -v bytes="$1" -v ms="$2" 'BEGIN { if (ms == "" || ms == "nan" || ms == 0) print "n/a"; else printf "%.2f GB/s", bytes/ms/1e6 }'; }

# Deleting thousands of files right before a timed run slows that run down several-fold on ext4:
# for about a minute, the inode allocator skips recently freed inodes one by one
# (`recently_deleted()` in fs/ext4/ialloc.c), so the next run's file creations pay for the last
# run's deletions (seen here: the same `cp -a` at 0.10 s on a quiet disk, 1.5 s right after an
# `rm -rf` of the previous copy). So trees are moved to a trash directory between samples (one
# rename) and deleted only between sections, followed by a pause that outlasts that window.
TRASH_BUDGET_KB=$(( $(df -Pk "$WORK" | awk 'NR==2 {print $4}') / 4 ))
delete_now() { for d in "$@"; do [ -e "$d" ] && { chmod -R u+w "$d" 2>/dev/null || true; rm -rf "$d"; }; done; return 0; }
rmtree() {
  local d
  mkdir -p "$TRASH"
  for d in "$@"; do
    [ -e "$d" ] && mv "$d" "$TRASH/$(date +%s%N)-$RANDOM"
  done
  return 0
}
# empty_trash [force]: delete the trash when forced or over budget, then wait out the window.
empty_trash() {
  [ -d "$TRASH" ] || return 0
  if [ "${1:-}" != force ] && [ "$(du -sk "$TRASH" | cut -f1)" -lt "$TRASH_BUDGET_KB" ]; then return 0; fi
  delete_now "$TRASH"
  sync
  if [ "$SMOKE" = 0 ]; then log "trash emptied: waiting 65 s for the recently-deleted-inode window (ext4)"; sleep 65; fi
}

STAGE_LIST="$DATA/stage-zst.txt"
STAGE_XZ_LIST="$DATA/stage-xz.txt"
STAGE_BYTES=$(summary stage_uncompressed)
T="$WORK/t-$SCALE"
TRASH="$WORK/trash"
[ -e "$T" ] && rmtree "$T"
empty_trash force
mkdir -p "$T"

# ---------------------------------------------------------------------------------------------
# 1. Warm bootstrap: CAS vs cp -a vs parallel tar

log "warm bootstrap of $STAGE ($(summary stage_archives) archives, $STAGE_BYTES bytes)"
# Stage dirs are not archive members, so concurrent tars would race creating them: create them first
# (TheRock's bootstrap creates them too). Manifests are read, not extracted, by a bootstrap.
RELPATHS="$T/relpaths.txt"
sed "s|^|$DATA/run/|" "$STAGE_LIST" | while read -r a; do
  tar -I zstd --occurrence=1 -xOf "$a" artifact_manifest.txt
done | sort -u >"$RELPATHS"
par_tar() { # par_tar LIST DIR DEST
  mkdir -p "$3"
  (cd "$3" && xargs mkdir -p <"$RELPATHS")
  sed "s|^|$2/|" "$1" | xargs -P "$NCPU" -I{} tar -I zstd --exclude=artifact_manifest.txt -xf {} -C "$3"
}
par_tar_xz() {
  mkdir -p "$3"
  (cd "$3" && xargs mkdir -p <"$RELPATHS")
  sed "s|^|$2/|" "$1" | xargs -P "$NCPU" -I{} tar --exclude=artifact_manifest.txt -xJf {} -C "$3"
}
section_warm() {
  STORE="$T/store"
  "$BENCH" ingest --store "$STORE" $(sed "s|^|$DATA/run/|" "$STAGE_LIST") >/dev/null
  for _ in $(seq 1 "$REPEAT"); do
    empty_trash
    sample tar_zst "rmtree $T/tar" par_tar "$STAGE_LIST" "$DATA/run" "$T/tar"
    # The tree tar left is the source of cp -a (same files, same disk).
    sample cp_a "rmtree $T/cp" cp -a "$T/tar" "$T/cp"
    sample cairn_lib_warm "rmtree $T/lib" "$BENCH" materialize --store "$STORE" --keys "$STAGE_LIST" --dest "$T/lib"
    # How the copies were made (reflink on XFS/btrfs, copy_file_range on ext4).
    COPY_METHODS="$(grep -o 'reflink=[0-9]* copy_file_range=[0-9]* read_write=[0-9]*' "$WORK/last.out" | tr ' ' ',')"
    # Opt-in hard links to the read-only blobs (`cairn bootstrap --hardlink`).
    sample cairn_lib_hardlink "rmtree $T/hl" "$BENCH" materialize --store "$STORE" --keys "$STAGE_LIST" --dest "$T/hl" --hardlink
  done
  rmtree "$T/cp"
  # Same result as tar: every file of the tar tree is in the materialized one, byte for byte.
  if ! diff -r --no-dereference -x artifact_manifest.txt -x '*.prebuilt' -x .cairn-state.json "$T/tar" "$T/lib" >/dev/null; then
    die "the CAS materialization differs from tar's extraction"
  fi
  rmtree "$T/lib" "$T/tar" "$T/hl"
}
if wants warm; then section_warm; fi

# ---------------------------------------------------------------------------------------------
# 2-5. Through S3 and the daemon: cold fetch+extract vs TheRock's Python approach (zst and xz),
# warm bootstrap through cairnd, 8 concurrent bootstraps, resolve

section_daemon() {
  start_moto
  DPIDS=()
  cleanup() {
    for pid in "${DPIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    stop_moto
  }
  trap cleanup EXIT
  ENDPOINT="$CAIRN_TEST_S3_ENDPOINT"
  upload() { "$PY" benches/baseline_fetch.py upload --endpoint "$ENDPOINT" "$@" >/dev/null; }
  py_fetch() { "$PY" benches/baseline_fetch.py fetch --endpoint "$ENDPOINT" "$@"; }
  log "uploading the generated run to $ENDPOINT"
  upload --bucket "$BUCKET" --prefix "$RUN_ZST-linux" "$DATA/run"
  upload --bucket "$BUCKET-xz" --prefix "$RUN_XZ-linux" "$DATA/xz"
  # Objects the baseline fetches: the generated archives, or (with the CLI) the ones `cairn push`
  # published, so both sides read exactly the same objects.
  PY_ZST=(--bucket "$BUCKET" --prefix "$RUN_ZST-linux")
  PY_XZ=(--bucket "$BUCKET-xz" --prefix "$RUN_XZ-linux")

  if [ "$HAVE_CLI" = 1 ]; then
    # One cairnd per role, each with its own store, like separate machines sharing a bucket.
    declare -gA DPID
    start_cairnd() { # name bucket
      local name="$1" bucket="$2"
      rmtree "$T/$name-store"
      RUST_LOG="${RUST_LOG:-warn}" "$CAIRND" serve --store "$T/$name-store" --socket "$T/run/$name.sock" \
        --s3-endpoint "$ENDPOINT" --s3-bucket "$bucket" >"$T/$name.log" 2>&1 &
      DPID[$name]=$!
      DPIDS+=("$!")
      for _ in $(seq 1 400); do
        cn "$name" status >/dev/null 2>&1 && return 0
        kill -0 "${DPID[$name]}" 2>/dev/null || break
        sleep 0.05
      done
      cat "$T/$name.log" >&2
      die "cairnd ($name) did not start"
    }
    stop_cairnd() { # name
      local pid="${DPID[$1]:-}"
      [ -n "$pid" ] || return 0
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      DPID[$1]=""
    }
    restart_cairnd() { stop_cairnd "$1"; start_cairnd "$1" "$2"; }
    cn() { local name="$1"; shift; "$CAIRN" --daemon "unix:$T/run/$name.sock" --quiet "$@"; }
    # "GETs bytes ingests" from the daemon's counters.
    gets() { cn "$1" --json status | jq -r '"\(.storage_gets) \(.storage_bytes) \(.ingests)"'; }

    log "daemon rows: checkout, build dir, cairn push of the producing stages (zst and xz runs)"
    SRC="$("$BENCH" checkout --out "$T/src" --topology "$ROOT/BUILD_TOPOLOGY.toml")"
    "$BENCH" dirs --out "$T/build" --list "$STAGE_LIST" --scale "$SCALE" --family "$FAMILY" \
      --topology "$ROOT/BUILD_TOPOLOGY.toml" >/dev/null
    upload --bucket "$BUCKET-push" --prefix none --list /dev/null "$DATA/run"
    upload --bucket "$BUCKET-push-xz" --prefix none --list /dev/null "$DATA/run"
    sed 's/_.*//' "$STAGE_LIST" | sort -u >"$T/stage-names.txt"
    start_cairnd ci "$BUCKET-push"
    start_cairnd cixz "$BUCKET-push-xz"
    for st in $("$CAIRN" --topology "$ROOT/BUILD_TOPOLOGY.toml" topology stages | awk '{print $1}'); do
      if "$CAIRN" --topology "$ROOT/BUILD_TOPOLOGY.toml" topology produced --stage "$st" | awk '{print $1}' \
          | grep -qxF -f "$T/stage-names.txt"; then
        cn ci push --stage "$st" --family generic --build-dir "$T/build" --run-id 7101 --checkout "$SRC" >/dev/null
        cn cixz push --stage "$st" --family generic --build-dir "$T/build" --run-id 7102 --checkout "$SRC" \
          --compression xz >/dev/null
      fi
    done
    stop_cairnd ci
    stop_cairnd cixz
    rmtree "$T/build" "$T/ci-store" "$T/cixz-store"
    PY_ZST=(--bucket "$BUCKET-push" --prefix "7101-linux")
    PY_XZ=(--bucket "$BUCKET-push-xz" --prefix "7102-linux")
    # Inbound artifacts TheRock does not build on Linux (core-hipinfo) are left out, as TheRock's
    # fetch silently does.
    EXCLUDED="$("$CAIRN" --topology "$ROOT/BUILD_TOPOLOGY.toml" topology inbound --stage "$STAGE" \
      | awk '{print $1}' | grep -vxF -f "$T/stage-names.txt" | paste -sd, -)"
    boot() {
      cn dev bootstrap --stage "$STAGE" --family "$FAMILY" --checkout "$SRC" \
        ${EXCLUDED:+--exclude-artifacts "$EXCLUDED"} --build-dir "$@"
    }

    cairn_round() {
      # Cold: a new daemon store each time; warm: the same daemon again into a new build dir.
      sample cairn_cold_zst "restart_cairnd dev $BUCKET-push; rmtree $T/cold" boot "$T/cold"
      GETS_ONE=$(gets dev)
      sample cairn_warm "rmtree $T/warm" boot "$T/warm"
      # The CLI row's baselines, sampled next to it: the filesystem's state (free-inode layout,
      # earlier deletions) drifts between sections, so baselines from the first section do not fit.
      sample cp_a_d "rmtree $T/cpw" cp -a "$T/warm" "$T/cpw"
      sample tar_zst_d "rmtree $T/tarw" par_tar "$STAGE_LIST" "$DATA/run" "$T/tarw"
      rmtree "$T/cpw" "$T/tarw"
      rmtree "$T/cold" "$T/warm"
      sample cairn_cold_xz "restart_cairnd dev $BUCKET-push-xz; rmtree $T/cold" boot "$T/cold"
      rmtree "$T/cold"
    }

    # 8 concurrent cold bootstraps of the stage against one daemon.
    eight() {
      local pids=() i rc=0
      for i in 1 2 3 4 5 6 7 8; do boot "$T/c$i" & pids+=("$!"); done
      for i in "${pids[@]}"; do wait "$i" || rc=1; done
      return $rc
    }
    for _ in $(seq 1 "$REPEAT"); do
      empty_trash
      sample cairn_cold8 "restart_cairnd dev $BUCKET-push; rmtree $T/c1 $T/c2 $T/c3 $T/c4 $T/c5 $T/c6 $T/c7 $T/c8" eight
    done
    GETS_EIGHT=$(gets dev)
    rmtree "$T"/c[1-8]

    # Resolve: first call on a new daemon store is cold, the rest warm.
    for i in $(seq 1 "$REPEAT"); do
      restart_cairnd dev "$BUCKET-push"
      "$BENCH" resolve --daemon "unix:$T/run/dev.sock" --checkout "$SRC" --topology "$ROOT/BUILD_TOPOLOGY.toml" \
        --stage "$STAGE" --family "$FAMILY" --calls 6 >"$T/resolve.out"
      head -1 "$T/resolve.out" | cut -d' ' -f1 >>"$T/resolve-cold.txt"
      tail -n +2 "$T/resolve.out" | cut -d' ' -f1 >>"$T/resolve-warm.txt"
    done
    MS[resolve_cold]=$(median <"$T/resolve-cold.txt")
    MS[resolve_warm]=$(median <"$T/resolve-warm.txt")
    RESOLVED_ARCHIVES=$(head -1 "$T/resolve.out" | cut -d' ' -f2)
    log "resolve: cold ${MS[resolve_cold]} ms, warm ${MS[resolve_warm]} ms ($RESOLVED_ARCHIVES archives)"
    stop_cairnd dev
  else
    log "\`cairn bootstrap\` is not available: daemon rows are n/a"
  fi

  for _ in $(seq 1 "$REPEAT"); do
    empty_trash
    [ "$HAVE_CLI" = 1 ] && cairn_round
    sample py_cold_zst "rmtree $T/py" py_fetch "${PY_ZST[@]}" --names "$STAGE_LIST" --output-dir "$T/py"
    sample py_cold_xz "rmtree $T/py" py_fetch "${PY_XZ[@]}" --names "$STAGE_XZ_LIST" --output-dir "$T/py"
    sample tar_xz "rmtree $T/tarxz" par_tar_xz "$STAGE_XZ_LIST" "$DATA/xz" "$T/tarxz"
  done
  [ "$HAVE_CLI" = 1 ] && stop_cairnd dev
  rmtree "$T/py" "$T/tarxz"
  write_results
  if [ "$HAVE_CLI" = 1 ]; then
    read -r g8 b8 i8 <<<"$GETS_EIGHT"
    read -r g1 b1 i1 <<<"$GETS_ONE"
    GETS_PER_OBJECT=$(awk -v g8="$g8" -v b8="$b8" -v i8="$i8" -v g1="$g1" -v b1="$b1" -v i1="$i1" -v n="$(summary stage_archives)" \
      'BEGIN { printf "%.2f archive downloads/archive (%d ingests for %d archives; %.1f MB downloaded vs %.1f MB by 1 bootstrap); GETs incl. ranges and metadata: %d vs %d", i8/n, i8, n, b8/1e6, b1/1e6, g8, g1 }')
  fi
}
if wants daemon; then section_daemon; fi

# ---------------------------------------------------------------------------------------------
# 6. Dedup: the stage's `_generic` outputs republished by 4 family jobs vs 1

section_dedup() {
  log "dedup: $(summary republish_archives) _generic archives x 1 job vs x 4 jobs"
  one=$("$BENCH" ingest --store "$T/dedup1" $(sed "s|^|$DATA/republish/job1/|" "$DATA/republish.txt") | sed 's/.*=//')
  four=$(for j in 1 2 3 4; do sed "s|^|$DATA/republish/job$j/|" "$DATA/republish.txt"; done | xargs "$BENCH" ingest --store "$T/dedup4" | sed 's/.*=//')
  # Bytes of blob files (not `du` of the directories, whose own sizes vary with entry order).
  blob_bytes() { find "$1/cas-v1/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
  DEDUP_ONE=$(blob_bytes "$T/dedup1")
  DEDUP_FOUR=$(blob_bytes "$T/dedup4")
  log "dedup: new blob bytes 1 job $one, 4 jobs $four; blobs dir $DEDUP_ONE vs $DEDUP_FOUR"
  rmtree "$T/dedup1" "$T/dedup4"
}
if wants dedup; then section_dedup; fi

# ---------------------------------------------------------------------------------------------
# 7. Peak RSS of cairnd ingesting the largest archive (and one a tenth its size)

section_rss() {
  rss_kb() { # rss_kb ARCHIVE
    local s="$T/rss-store"
    rmtree "$s"
    /usr/bin/time -v "$CAIRND" ingest --store "$s" "$1" 2>"$T/time.out" >/dev/null || { cat "$T/time.out" >&2; die "cairnd ingest failed"; }
    rmtree "$s"
    awk -F': ' '/Maximum resident set size/ {print $2}' "$T/time.out"
  }
  members() { tar -I zstd -tf "$1" | wc -l; }
  RSS_BIG_MEMBERS=$(members "$DATA/run/$(summary largest_archive)")
  RSS_TENTH_MEMBERS=$(members "$DATA/run/$(summary tenth_archive)")
  RSS_BIG=$(rss_kb "$DATA/run/$(summary largest_archive)")
  RSS_TENTH=$(rss_kb "$DATA/run/$(summary tenth_archive)")
  log "peak RSS: $RSS_BIG kB ($(summary largest_archive)), $RSS_TENTH kB ($(summary tenth_archive))"
}
if wants rss; then section_rss; fi

# ---------------------------------------------------------------------------------------------
# The table

mb() { awk -v b="$1" 'BEGIN { printf "%.0f MB", b/1e6 }'; }
v() { echo "${MS[$1]:-}"; }
na_cli="n/a (not run)"; [ "$HAVE_CLI" = 1 ] || na_cli="n/a (needs cairn bootstrap)"
cell_or_na() { if [ -n "$(v "$1")" ]; then fmt_ms "$(v "$1")"; else echo "$na_cli"; fi; }

{
  echo
  echo "Cairn benchmarks — scale \`$SCALE\`, median of $REPEAT, $PROFILE build, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Machine: $NCPU cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -g | awk '/Mem:/ {print $2}') GB RAM, $(df -T "$WORK" | awk 'NR==2 {print $2}') on $(df "$WORK" | awk 'NR==2 {print $1}')"
  echo "Warm copies from the CAS: ${COPY_METHODS:-n/a}"
  echo "Run: $(summary run_archives) archives, $(mb "$(summary run_uncompressed)") content, $(mb "$(summary run_compressed)") .tar.zst; stage \`$STAGE\` ($FAMILY): $(summary stage_archives) archives, $(summary stage_files) files, $(mb "$STAGE_BYTES") content, $(mb "$(summary stage_zst)") zst, $(mb "$(summary stage_xz)") xz"
  echo
  echo "| Measurement | Cairn | Baseline | Ratio (baseline / Cairn) | Target |"
  echo "|---|---|---|---|---|"
  echo "| Warm bootstrap, library (CAS → build dir) vs \`cp -a\` | $(fmt_ms "$(v cairn_lib_warm)") ($(gbps "$STAGE_BYTES" "$(v cairn_lib_warm)")) | $(fmt_ms "$(v cp_a)") | $(ratio "$(v cairn_lib_warm)" "$(v cp_a)") | ≥ 0.67× (≤ 1.5× cp -a) |"
  echo "| Warm bootstrap, library vs parallel \`tar -I zstd -xf\` (-P $NCPU) | $(fmt_ms "$(v cairn_lib_warm)") | $(fmt_ms "$(v tar_zst)") | $(ratio "$(v cairn_lib_warm)" "$(v tar_zst)") | ≥ 3× |"
  echo "| Warm bootstrap, library, \`--hardlink\` (opt-in) vs parallel tar | $(fmt_ms "$(v cairn_lib_hardlink)") | $(fmt_ms "$(v tar_zst)") | $(ratio "$(v cairn_lib_hardlink)" "$(v tar_zst)") | ≥ 3× |"
  echo "| Warm \`cairn bootstrap\` (daemon) vs \`cp -a\` (sampled alongside) | $(cell_or_na cairn_warm) | $(fmt_ms "$(v cp_a_d)") | $(ratio "$(v cairn_warm)" "$(v cp_a_d)") | ≥ 0.67× |"
  echo "| Warm \`cairn bootstrap\` (daemon) vs parallel tar (sampled alongside) | $(cell_or_na cairn_warm) | $(fmt_ms "$(v tar_zst_d)") | $(ratio "$(v cairn_warm)" "$(v tar_zst_d)") | ≥ 3× |"
  echo "| Cold fetch+extract \`.tar.zst\` from S3 vs Python (boto3, 10 downloads, tarfile pool) | $(cell_or_na cairn_cold_zst) | $(fmt_ms "$(v py_cold_zst)") | $(ratio "$(v cairn_cold_zst)" "$(v py_cold_zst)") | ≥ 2× |"
  echo "| Cold fetch+extract \`.tar.xz\` from S3 vs Python | $(cell_or_na cairn_cold_xz) | $(fmt_ms "$(v py_cold_xz)") | $(ratio "$(v cairn_cold_xz)" "$(v py_cold_xz)") | ≥ 2× |"
  echo "| Parallel \`tar -xJf\` of the same \`.tar.xz\` (local, no download) | — | $(fmt_ms "$(v tar_xz)") | — | — |"
  echo "| 8 concurrent cold bootstraps vs 1 (wall time) | $(cell_or_na cairn_cold8) | $(cell_or_na cairn_cold_zst) | $(ratio "$(v cairn_cold_zst)" "$(v cairn_cold8)") (8 vs 1) | — (8 build dirs are 8× the files written) |"
  echo "| Storage GETs per object, 8 concurrent bootstraps | ${GETS_PER_OBJECT:-$na_cli} | — | — | ≈ 1 download/object |"
  echo "| Resolve of the whole stage, warm | $(cell_or_na resolve_warm) | — | — | < 5 ms |"
  echo "| Resolve of the whole stage, cold | $(cell_or_na resolve_cold) | — | — | 1 LIST per unknown fingerprint |"
  if wants dedup; then
    echo "| CAS bytes: \`_generic\` outputs republished by 4 jobs vs 1 | $(mb "$DEDUP_FOUR") | $(mb "$DEDUP_ONE") | +$((DEDUP_FOUR - DEDUP_ONE)) bytes | +0 bytes |"
  fi
  if wants rss; then
    echo "| Peak RSS of \`cairnd ingest\`, largest archive ($(mb "$(summary largest_uncompressed)"), $RSS_BIG_MEMBERS members) vs one ~1/10 its size ($(mb "$(summary tenth_uncompressed)"), $RSS_TENTH_MEMBERS members) | $((RSS_BIG / 1024)) MB | $((RSS_TENTH / 1024)) MB | $(awk -v a="$RSS_BIG" -v b="$RSS_TENTH" 'BEGIN {printf "%.2f×", a/b}') | independent of size |"
  fi
  echo
  echo "Raw samples (ms): $RESULTS"
} | tee "$WORK/table-$SCALE.md"

if [ "$KEEP" = 0 ]; then delete_now "$T"; fi
SMOKE=1 empty_trash force
