#!/usr/bin/env bash
# Bisect benchmark (issue 17): `cairn bisect run` against (a) the docs' earlier recipe, `git bisect
# run` + `cairn bootstrap` into a fresh build dir per step, and (b) an IREE-style loop
# (`git bisect start --no-checkout --first-parent`, a fresh directory and a full download per step
# with the Python baseline fetcher, benches/baseline_fetch.py), on one generated history.
#
#   benches/bisect.sh [--scale small|medium] [--commits N] [--bad K] [--cmd-seconds S]
#                     [--repeat R] [--profile debug|release] [--client-profile P] [--work DIR]
#
# The history: a TheRock-shaped checkout (`cairn-bench checkout`) whose superproject bumps
# `rocm-systems` N times (default 16). A CI run publishes with Cairn at every commit (moto S3): the
# first builds every inbound artifact of `math-libs` for gfx94X-dcgpu (the `gen` run's stage set at
# --scale), each later one rebuilds only the artifacts whose fingerprints the bump changed, with new
# content (multi-base, as TheRock's CI reuses unchanged artifacts). The regression enters at commit K
# (default 11); the test command looks a file up in the build dir, sleeps --cmd-seconds (default 2,
# a stand-in for a real test) and says bad from K on. All three bisect the superproject's history
# from a cold daemon store (a) (b) or empty machine, and are sampled in alternation, --repeat times.
#
# Per method: total wall time, bytes downloaded (cairn: the daemon's counters; baseline: archive
# sizes), files written per step, and the gap from one command's end to the next command's start
# (the command logs both times). Prints a Markdown table; raw data under WORK/bisect-*/.
#
# Needs: cargo, python3, git, jq, zstd. moto + boto3 in .cache/venv (scripts/lib.sh); pyzstd is
# used by the baseline when installed, else `zstd -dc`.
set -euo pipefail

SCALE=small
COMMITS=16
BAD=11
CMD_SECONDS=2
REPEAT=1
PROFILE=debug
CLIENT_PROFILE=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --commits) COMMITS="$2"; shift 2 ;;
    --bad) BAD="$2"; shift 2 ;;
    --cmd-seconds) CMD_SECONDS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --profile) PROFILE="$2"; shift 2 ;;
    --client-profile) CLIENT_PROFILE="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument \`$1\` (see --help)" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../scripts/lib.sh
source scripts/lib.sh
WORK="${WORK:-$CAIRN_CACHE_DIR/bench}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
STAGE=math-libs
FAMILY=gfx94X-dcgpu
BUCKET=cairn-bisect
TOPO="$ROOT/BUILD_TOPOLOGY.toml"
log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 2; }
for t in git jq zstd python3; do command -v "$t" >/dev/null || die "\`$t\` is required"; done

CLIENT_PROFILE="${CLIENT_PROFILE:-$PROFILE}"
flag() { [ "$1" = release ] && echo --release; return 0; }
log "building $PROFILE binaries (cairn: $CLIENT_PROFILE)"
cargo build $(flag "$PROFILE") --quiet -p cairn-daemon -p cairn-benches --bin cairnd --bin cairn-bench
cargo build $(flag "$CLIENT_PROFILE") --quiet -p cairn-client --bin cairn
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
CAIRND="$TARGET_DIR/$PROFILE/cairnd"
CAIRN="$TARGET_DIR/$CLIENT_PROFILE/cairn"
BENCH="$TARGET_DIR/$PROFILE/cairn-bench"
ensure_moto
PY="$CAIRN_VENV/bin/python"

DATA="$WORK/data-$SCALE"
if [ ! -f "$DATA/summary.json" ]; then
  log "generating the $SCALE run into $DATA (for its stage list)"
  rm -rf "$DATA"
  "$BENCH" gen --out "$DATA" --scale "$SCALE" --stage "$STAGE" --family "$FAMILY" --topology "$TOPO" >/dev/null
fi
STAGE_LIST="$DATA/stage-zst.txt"

T="$WORK/bisect-$SCALE"
[ -e "$T" ] && { chmod -R u+w "$T" 2>/dev/null || true; rm -rf "$T"; }
mkdir -p "$T"

start_moto
DPIDS=()
cleanup() {
  for pid in "${DPIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  stop_moto
}
trap cleanup EXIT
ENDPOINT="$CAIRN_TEST_S3_ENDPOINT"
"$PY" benches/baseline_fetch.py upload --endpoint "$ENDPOINT" --bucket "$BUCKET" --prefix none \
  --list /dev/null "$DATA/run" >/dev/null

declare -A DPID
start_cairnd() { # name
  local name="$1"
  rm -rf "$T/$name-store"
  RUST_LOG="${RUST_LOG:-warn}" "$CAIRND" serve --store "$T/$name-store" --socket "$T/run/$name.sock" \
    --s3-endpoint "$ENDPOINT" --s3-bucket "$BUCKET" >"$T/$name.log" 2>&1 &
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
stop_cairnd() {
  local pid="${DPID[$1]:-}"
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  DPID[$1]=""
}
cn() { local name="$1"; shift; "$CAIRN" --daemon "unix:$T/run/$name.sock" --topology "$TOPO" --quiet "$@"; }

# ---------------------------------------------------------------------------------------------
# The history and its CI runs

log "history: $COMMITS bumps of rocm-systems, one CI run per commit"
SRC="$("$BENCH" checkout --out "$T/src" --topology "$TOPO")"
# The artifact names of the stage set (topology names), and the inbound ones it leaves out (TheRock
# does not build them on Linux), which every method excludes alike.
name_of() { sed -E 's/_(lib|run|dev|dbg|doc|test)_.*//'; }
name_of <"$STAGE_LIST" | sort -u >"$T/names.txt"
ARTIFACTS="$(paste -sd, "$T/names.txt")"
EXCLUDED="$("$CAIRN" --topology "$TOPO" topology inbound --stage "$STAGE" | awk '{print $1}' \
  | grep -vxF -f "$T/names.txt" | paste -sd, -)"
STAGES="$("$CAIRN" --topology "$TOPO" topology stages | awk '{print $1}')"
start_cairnd ci
fingerprints() { "$CAIRN" --json fingerprint --checkout "$SRC" --family "$FAMILY" --topology "$TOPO"; }
publish() { # K LIST: generate the listed archives' dirs (seed K+1) and push every stage producing them
  local k="$1" list="$2" build="$T/build-$1"
  "$BENCH" dirs --out "$build" --list "$list" --scale "$SCALE" --family "$FAMILY" --seed $((k + 1)) \
    --topology "$TOPO" >/dev/null
  # Regular files of the artifacts this run rebuilt: what a step landing on K may rewrite.
  find "$build/artifacts" -type f ! -name artifact_manifest.txt | wc -l >"$T/keys/$k.files"
  name_of <"$list" | sort -u >"$T/pub-names.txt"
  for st in $STAGES; do
    if "$CAIRN" --topology "$TOPO" topology produced --stage "$st" | awk '{print $1}' \
        | grep -xF -f "$T/pub-names.txt" >/dev/null; then
      cn ci push --stage "$st" --family generic --build-dir "$build" --run-id $((8000 + k)) \
        --checkout "$SRC" >/dev/null
    fi
  done
  rm -rf "$build"
}
# keys K: the object keys of commit K's artifact set (what a full CI run of K would hold).
keys() {
  cn ci --json resolve --stage "$STAGE" --family "$FAMILY" --checkout "$SRC" \
    ${EXCLUDED:+--exclude-artifacts "$EXCLUDED"} \
    | jq -r '.. | objects | select(.producer? != null) | .producer.key' | sort -u >"$T/keys/$1.txt"
  [ -s "$T/keys/$1.txt" ] || die "no keys resolved for commit $1"
}
mkdir -p "$T/keys"
: >"$T/commits.txt"
: >"$T/changed.txt"
fingerprints >"$T/fp-prev.json"
publish 0 "$STAGE_LIST"
git -C "$SRC" rev-parse HEAD >>"$T/commits.txt"
keys 0
for k in $(seq 1 "$COMMITS"); do
  (cd "$SRC/rocm-systems" && echo "change $k" >>CHANGES.md && git add -A && git commit -qm "rocm-systems change $k")
  git -C "$SRC" add rocm-systems
  git -C "$SRC" commit -qm "bump rocm-systems: change $k"
  git -C "$SRC" rev-parse HEAD >>"$T/commits.txt"
  fingerprints >"$T/fp.json"
  jq -r --slurpfile prev "$T/fp-prev.json" 'to_entries[] | select($prev[0][.key] != .value) | .key' \
    "$T/fp.json" | grep -xF -f "$T/names.txt" >"$T/changed-names.txt" || true
  grep -E "^($(paste -sd'|' "$T/changed-names.txt"))_(lib|run|dev|dbg|doc|test)_" "$STAGE_LIST" \
    >"$T/changed-list.txt"
  echo "$k $(wc -l <"$T/changed-list.txt") $(paste -sd, "$T/changed-names.txt")" >>"$T/changed.txt"
  publish "$k" "$T/changed-list.txt"
  keys "$k"
  mv "$T/fp.json" "$T/fp-prev.json"
done
stop_cairnd ci
GOOD="$(sed -n 1p "$T/commits.txt")"
BADC="$(sed -n "$((COMMITS + 1))p" "$T/commits.txt")"
# The verdict: bad from commit BAD on.
sed -n "$((BAD + 1)),\$p" "$T/commits.txt" >"$T/bad-commits.txt"
REGRESSION="$(sed -n "$((BAD + 1))p" "$T/commits.txt")"
git -C "$SRC" status --porcelain >/dev/null

# The test command: logs start and end (ns), checks a file every method materializes, sleeps.
PROBE_FILE="$(cd "$T" && "$BENCH" dirs --out "$T/probe" --list <(head -1 "$STAGE_LIST") --scale "$SCALE" \
  --family "$FAMILY" --topology "$TOPO" >/dev/null; cd "$T/probe/artifacts"/* && find . -type f ! -name artifact_manifest.txt -print -quit | cut -c3-)"
rm -rf "$T/probe"
cat >"$T/test.sh" <<EOF
#!/bin/sh
# \$1: build dir, \$2: commit, \$3: log
echo "start \$(date +%s%N) \$2" >>"\$3"
test -e "\$1/$PROBE_FILE" || { echo "missing \$1/$PROBE_FILE" >&2; exit 3; }
sleep $CMD_SECONDS
verdict=0
grep -qx "\$2" "$T/bad-commits.txt" && verdict=1
echo "end \$(date +%s%N) \$2" >>"\$3"
exit \$verdict
EOF
chmod +x "$T/test.sh"

# ---------------------------------------------------------------------------------------------
# The three methods

# gaps LOG: the gaps (ms) from each command end to the next command start.
gaps() { awk '$1=="start" && e {printf "%d\n", ($2 - e) / 1e6} $1=="end" {e=$2}' "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

run_cairn() { # R
  local r="$1" d="$T/m-cairn-$r"
  mkdir -p "$d"
  start_cairnd dev
  local s; s=$(now_ms)
  cn dev --json bisect run --good "$GOOD" --bad "$BADC" --family "$FAMILY" --artifacts "$ARTIFACTS" \
    --checkout "$SRC" --build-dir "$d/build" -- sh -c "exec '$T/test.sh' \"\$CAIRN_BUILD_DIR\" \"\$CAIRN_BISECT_COMMIT\" '$d/cmd.log'" \
    >"$d/report.json" 2>"$d/stderr" || { cat "$d/stderr" >&2; die "cairn bisect run failed"; }
  echo $(( $(now_ms) - s )) >"$d/wall_ms"
  jq -r .result.commit "$d/report.json" >"$d/found"
  jq -r '.totals.downloaded_bytes + .totals.prefetched_bytes' "$d/report.json" >"$d/reported_bytes"
  cn dev --json status | jq -r .storage_bytes >"$d/bytes"
  jq -r '.steps[] | .files_written' "$d/report.json" >"$d/files"
  stop_cairnd dev
}

run_recipe() { # R: git bisect run + cairn bootstrap into a fresh build dir
  local r="$1" d="$T/m-recipe-$r"
  mkdir -p "$d"
  start_cairnd dev
  cat >"$d/step.sh" <<EOF
#!/bin/sh
git submodule update --init --quiet rocm-systems || exit 125
rm -rf "$d/build"
"$CAIRN" --daemon "unix:$T/run/dev.sock" --topology "$TOPO" --quiet bootstrap --stage $STAGE --family $FAMILY \
  --checkout . ${EXCLUDED:+--exclude-artifacts $EXCLUDED} --build-dir "$d/build" || exit 125
find "$d/build" -type f ! -name '*.prebuilt' ! -name '.cairn-*' | wc -l >>"$d/files"
exec "$T/test.sh" "$d/build" "\$(git rev-parse HEAD)" "$d/cmd.log"
EOF
  chmod +x "$d/step.sh"
  local s; s=$(now_ms)
  (
    cd "$SRC"
    git bisect start "$BADC" "$GOOD" >/dev/null
    git bisect run "$d/step.sh" >"$d/bisect.out" 2>&1 || { cat "$d/bisect.out" >&2; exit 2; }
    git rev-parse refs/bisect/bad >"$d/found"
    git bisect reset --quiet "$BADC" 2>/dev/null || git bisect reset >/dev/null 2>&1
    git checkout -q main 2>/dev/null || true
    git submodule update --quiet rocm-systems
  )
  echo $(( $(now_ms) - s )) >"$d/wall_ms"
  cn dev --json status | jq -r .storage_bytes >"$d/bytes"
  stop_cairnd dev
}

run_iree() { # R: --no-checkout bisect, fresh dir and full download per step (Python fetcher)
  local r="$1" d="$T/m-iree-$r"
  mkdir -p "$d"
  : >"$d/fetch.jsonl"
  cat >"$d/step.sh" <<EOF
#!/bin/sh
c=\$(git rev-parse BISECT_HEAD)
k=\$(grep -nx "\$c" "$T/commits.txt" | cut -d: -f1)
[ -n "\$k" ] || exit 125
rm -rf "$d/build"
"$PY" "$ROOT/benches/baseline_fetch.py" fetch --endpoint "$ENDPOINT" --bucket "$BUCKET" --prefix unused \
  --keys "$T/keys/\$((k - 1)).txt" --output-dir "$d/build" >>"$d/fetch.jsonl" || exit 125
exec "$T/test.sh" "$d/build" "\$c" "$d/cmd.log"
EOF
  chmod +x "$d/step.sh"
  local s; s=$(now_ms)
  (
    cd "$SRC"
    git bisect start --no-checkout --first-parent "$BADC" "$GOOD" >/dev/null
    git bisect run "$d/step.sh" >"$d/bisect.out" 2>&1 || { cat "$d/bisect.out" >&2; exit 2; }
    git rev-parse refs/bisect/bad >"$d/found"
    git bisect reset --quiet >/dev/null 2>&1 || git bisect reset >/dev/null 2>&1
  )
  echo $(( $(now_ms) - s )) >"$d/wall_ms"
  jq -s 'map(.downloaded_bytes) | add' "$d/fetch.jsonl" >"$d/bytes"
  jq -r .files "$d/fetch.jsonl" >"$d/files"
}

git -C "$SRC" checkout -q -B main "$BADC"
for r in $(seq 1 "$REPEAT"); do
  for m in cairn recipe iree; do
    log "round $r: $m"
    "run_$m" "$r"
    d="$T/m-$m-$r"
    [ "$(cat "$d/found")" = "$REGRESSION" ] || die "$m found $(cat "$d/found"), not $REGRESSION"
    gaps "$d/cmd.log" >"$d/gaps"
    log "$m: $(cat "$d/wall_ms") ms, $(cat "$d/bytes") bytes, files per step: $(paste -sd' ' "$d/files"), gaps ms: $(paste -sd' ' "$d/gaps")"
  done
done

# ---------------------------------------------------------------------------------------------
# The table

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
med() { for r in $(seq 1 "$REPEAT"); do cat "$T/m-$1-$r/$2"; done | median; }
allv() { for r in $(seq 1 "$REPEAT"); do cat "$T/m-$1-$r/$2"; done | sort -n | paste -sd' '; }
steps() { wc -l <"$T/m-$1-1/cmd.log" | awk '{print $1/2}'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b/1e6 }'; }
s() { awk -v v="$1" 'BEGIN { printf "%.1f s", v/1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == 0) print "n/a"; else printf "%.2f×", b/a }'; }
# Bytes of the distinct archives the cairn bisect touched: every archive of every commit it
# materialized or prefetched, i.e. the union of those commits' key sets.
touched_bytes() { # JQ: the commits whose archives count
  local d="$T/m-cairn-1"
  jq -r "$1" "$d/report.json" | sort -u | while read -r c; do
    k=$(grep -nx "$c" "$T/commits.txt" | cut -d: -f1); cat "$T/keys/$((k - 1)).txt"; done | sort -u >"$T/touched-keys.txt"
  "$PY" - "$ENDPOINT" "$BUCKET" "$T/touched-keys.txt" <<'EOF'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
print(sum(s3.head_object(Bucket=sys.argv[2], Key=k.strip())["ContentLength"] for k in open(sys.argv[3]) if k.strip()))
EOF
}
TOUCHED=$(touched_bytes '.steps[].commit, .prefetches[].commit')
PROBED_BYTES=$(touched_bytes '.steps[].commit')
PROBED=$(jq -r '[.steps[].commit] | unique | length' "$T/m-cairn-1/report.json")
# Distinct archives of the probed commits only (no prefetch).
STAGE_ZST=$(jq -r .stage_zst "$DATA/summary.json")
FULL_FILES=$(head -1 "$T/m-iree-1/files")
CHANGED_AVG=$(awk '{s += $2} END {printf "%.0f", s/NR}' "$T/changed.txt")
# Per cairn step after the first: files written / regular files of the artifacts the commit's run
# rebuilt (every bump changes the same artifacts, so those are the ones that differ between probes).
CHANGED_FILES=$(jq -r '.steps[1:][] | "\(.commit) \(.files_written)"' "$T/m-cairn-1/report.json" | while read -r c w; do
  k=$(grep -nx "$c" "$T/commits.txt" | cut -d: -f1); echo "$w/$(cat "$T/keys/$((k - 1)).files")"; done | paste -sd' ')
MAX_GAP_AFTER_FIRST=$(for r in $(seq 1 "$REPEAT"); do cat "$T/m-cairn-$r/gaps"; done | sort -n | tail -1)
{
  echo
  echo "Bisect benchmark — scale \`$SCALE\`, $PROFILE build (cairn: $CLIENT_PROFILE), median of $REPEAT, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "Machine: $(nproc) cores, $(df -T "$WORK" | awk 'NR==2 {print $2}'); moto S3 on 127.0.0.1"
  echo "History: $COMMITS bumps of rocm-systems after the good commit, regression at bump $BAD; artifact set: \`$STAGE\` inbound for $FAMILY, $(wc -l <"$STAGE_LIST") archives ($(mb "$STAGE_ZST") zst, $(jq -r .stage_files "$DATA/summary.json") files); each bump changes $CHANGED_AVG of them (runtime, HIP, profiler, base; not amd-llvm), which its run rebuilds; test command: $CMD_SECONDS s"
  echo
  echo "| Method | Wall time | Steps | Downloaded | Files written per step | CMD end → next CMD start |"
  echo "|---|---|---|---|---|---|"
  echo "| \`cairn bisect run\` | $(s "$(med cairn wall_ms)") | $(steps cairn) | $(mb "$(med cairn bytes)") | $(paste -sd' ' "$T/m-cairn-1/files") | $(paste -sd' ' "$T/m-cairn-1/gaps") ms |"
  echo "| (a) \`git bisect run\` + \`cairn bootstrap\` (fresh dir) | $(s "$(med recipe wall_ms)") ($(ratio "$(med cairn wall_ms)" "$(med recipe wall_ms)")) | $(steps recipe) | $(mb "$(med recipe bytes)") | $(paste -sd' ' "$T/m-recipe-1/files") | $(paste -sd' ' "$T/m-recipe-1/gaps") ms |"
  echo "| (b) IREE-style: fresh dir, full download (Python) | $(s "$(med iree wall_ms)") ($(ratio "$(med cairn wall_ms)" "$(med iree wall_ms)")) | $(steps iree) | $(mb "$(med iree bytes)") | $(paste -sd' ' "$T/m-iree-1/files") | $(paste -sd' ' "$T/m-iree-1/gaps") ms |"
  echo
  echo "Targets (\`cairn bisect run\`): each step after the first starts ≤ 1 s after the previous CMD's end: worst gap $MAX_GAP_AFTER_FIRST ms over $REPEAT round(s); bytes downloaded (probes + prefetches, $(mb "$(med cairn bytes)")) ≤ bytes of the distinct archives of the commits it probed or prefetched ($(mb "$TOUCHED")); probed commits: $PROBED, whose distinct archives are $(mb "$PROBED_BYTES") (prefetching both possible next probes downloads the half not taken too). Archive bytes by the report: $(mb "$(cat "$T/m-cairn-1/reported_bytes")"); the daemon's storage counter (with records and manifests): $(mb "$(med cairn bytes)")."
  echo "Files written by each cairn step after the first / files of the artifacts that differ: $CHANGED_FILES."
  echo "Wall times, all rounds (ms): cairn $(allv cairn wall_ms); recipe $(allv recipe wall_ms); iree $(allv iree wall_ms). A full stage materialization writes $FULL_FILES files."
} | tee "$T/table.md"
