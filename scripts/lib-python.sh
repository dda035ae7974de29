# Python helpers for scripts/python-interop (sourced after scripts/lib.sh, not run).

GRPC_VERSION="1.85.1"

# grpcio + grpcio-tools (the generated-stub toolchain TheRock's Python tooling would use) in the same
# venv as ensure_moto's ($CAIRN_CACHE_DIR/venv), created here when missing. PyPI only.
ensure_grpc() {
  local venv="$CAIRN_CACHE_DIR/venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import grpc, grpc_tools; assert grpc.__version__ == '$GRPC_VERSION'" 2>/dev/null; then
    echo "== installing grpcio==$GRPC_VERSION and grpcio-tools==$GRPC_VERSION into $venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "grpcio==$GRPC_VERSION" "grpcio-tools==$GRPC_VERSION"
  fi
  export CAIRN_VENV="$venv"
}

# Generate the cairn.v1 Python stubs from proto/ into directory $1 (importable as `cairn.v1`).
generate_stubs() {
  local out="$1"
  mkdir -p "$out"
  "$CAIRN_VENV/bin/python" -m grpc_tools.protoc -I proto/proto \
    --python_out="$out" --grpc_python_out="$out" proto/proto/cairn/v1/cairn.proto
}
