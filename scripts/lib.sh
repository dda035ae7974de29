# Shared shell helpers for scripts/test, scripts/demo and the bench scripts. Sourced, not run.

CAIRN_CACHE_DIR="${CAIRN_CACHE_DIR:-$PWD/.cache}"
MOTO_VERSION="5.2.5"

# Rust toolchain and cargo-nextest: present on the machine image; install nextest if missing.
ensure_toolchain() {
  command -v cargo >/dev/null || { echo "error: cargo not found; install Rust 1.95 (rustup)" >&2; exit 2; }
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "== installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

# moto's S3 server in a venv under .cache/ (PyPI), plus boto3 for the Python baseline in benches.
ensure_moto() {
  local venv="$CAIRN_CACHE_DIR/venv"
  if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
    echo "== installing moto[server]==$MOTO_VERSION and boto3 into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" boto3
  fi
  export CAIRN_VENV="$venv"
}

# The benches' Python side: moto + boto3 (ensure_moto) and pyzstd, TheRock's zstd binding, which the
# TheRock baseline (benches/baseline_fetch.py) reads archives with. Sets PY.
ensure_bench_python() {
  ensure_moto
  if ! "$CAIRN_VENV/bin/python" -c 'import pyzstd' 2>/dev/null; then
    echo "== installing pyzstd into $CAIRN_VENV (TheRock's zstd binding, for the baseline)" >&2
    "$CAIRN_VENV/bin/pip" install --quiet --disable-pip-version-check pyzstd
  fi
  PY="$CAIRN_VENV/bin/python"
}

# build_bench_binaries PROFILE: build cairnd, cairn and cairn-bench (release or debug) and set
# CAIRND, CAIRN and BENCH to them.
build_bench_binaries() {
  local profile="$1" flag=()
  [ "$profile" = release ] && flag=(--release)
  echo "== building $profile binaries" >&2
  cargo build "${flag[@]}" --quiet -p cairn-daemon -p cairn-client -p cairn-benches \
    --bin cairnd --bin cairn --bin cairn-bench
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
  CAIRND="$target_dir/$profile/cairnd"
  CAIRN="$target_dir/$profile/cairn"
  BENCH="$target_dir/$profile/cairn-bench"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# The credentials every local S3 server of the tests and benches is signed with.
export_test_s3_credentials() {
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
}

# Start moto on 127.0.0.1:<free port> and export CAIRN_TEST_S3_ENDPOINT for the tests.
start_moto() {
  local port; port=$(free_port)
  mkdir -p "$CAIRN_CACHE_DIR"
  "$CAIRN_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$CAIRN_CACHE_DIR/moto.log" 2>&1 &
  MOTO_PID=$!
  export CAIRN_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export_test_s3_credentials
  for _ in $(seq 1 100); do
    if curl -fsS "$CAIRN_TEST_S3_ENDPOINT/moto-api/" >/dev/null 2>&1 || \
       python3 -c "import urllib.request,sys; urllib.request.urlopen('$CAIRN_TEST_S3_ENDPOINT/')" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: moto server did not start on port $port; see $CAIRN_CACHE_DIR/moto.log" >&2
  exit 2
}

stop_moto() {
  if [ -n "${MOTO_PID:-}" ]; then kill "$MOTO_PID" 2>/dev/null || true; wait "$MOTO_PID" 2>/dev/null || true; fi
}
