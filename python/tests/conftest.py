"""Fixtures of the `cairn` package's tests: the Rust binaries, a real `cairnd` on a local-directory
store (`world`) or on the S3 test server (`s3_world`), a generated TheRock-shaped checkout over TheRock's real `BUILD_TOPOLOGY.toml`, and a CI run
published into it with the `cairn` CLI. No daemon is mocked.

The binaries come from `$CAIRN_BIN_DIR` (set by `scripts/python-tests`), else `target/debug`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
FAMILY = "gfx94X-dcgpu"
RUN_GENERIC = "1001"
RUN_MATH = "1002"


def _bin_dir() -> Path:
    if os.environ.get("CAIRN_BIN_DIR"):
        return Path(os.environ["CAIRN_BIN_DIR"])
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug"


@dataclass
class World:
    """Everything the tests share: binaries, work dir, checkout, daemon socket."""

    bins: Path
    work: Path
    checkout: Path
    socket: Path

    @property
    def daemon(self) -> str:
        return f"unix:{self.socket}"

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cairn --daemon unix:SOCKET ARGS...` (with `env` added to the environment)."""
        cmd = [str(self.bins / "cairn"), "--daemon", self.daemon, *args]
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} exited {p.returncode}: {p.stderr}")
        return p

    def cli_json(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> dict:
        return json.loads(self.cli(*args, "--json", check=check, env=env).stdout)

    def data(self, *args: str) -> str:
        """Run `cairn-demo-data ARGS...` and return its stdout."""
        cmd = [str(self.bins / "cairn-demo-data"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _world(storage: str) -> Iterator[World]:
    """A daemon over `storage` (`local`: a directory; `s3`: a fresh bucket on the S3 test server of
    `CAIRN_TEST_S3_ENDPOINT`, which `scripts/test` starts), with one CI run pushed through the CLI."""
    bins = _bin_dir()
    for b in ("cairn", "cairnd", "cairn-demo-data"):
        if not (bins / b).exists():
            pytest.exit(f"`{bins / b}` is missing; run `cargo build --workspace --bins` first", 2)
    # A private directory: cairn refuses sockets in directories others could write.
    work = Path(tempfile.mkdtemp(prefix="cairn-pytest-"))
    if storage == "s3":
        endpoint = os.environ.get("CAIRN_TEST_S3_ENDPOINT")
        if not endpoint:
            if os.environ.get("CI"):
                pytest.fail("CAIRN_TEST_S3_ENDPOINT is not set under CI: run the tests through scripts/test")
            pytest.skip("CAIRN_TEST_S3_ENDPOINT is not set (scripts/test starts the S3 test server)")
        bucket = f"cairn-pytest-{uuid.uuid4().hex[:12]}"
        # The test server takes an unsigned bucket creation.
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=30)
        storage_args = ["--s3-endpoint", endpoint, "--s3-bucket", bucket]
    else:
        storage_args = ["--local-storage", str(work / "bucket")]
    checkout = Path(
        subprocess.run(
            [str(bins / "cairn-demo-data"), "checkout", str(work / "src"),
             "--topology", str(REPO / "BUILD_TOPOLOGY.toml")],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    socket = work / "cairnd.sock"
    log = open(work / "cairnd.log", "w")
    daemon = subprocess.Popen(
        [str(bins / "cairnd"), "serve", "--store", str(work / "store"), *storage_args,
         "--socket", str(socket)],
        stderr=log, stdout=log, env={**os.environ, "RUST_LOG": "warn"},
    )  # fmt: skip
    w = World(bins, work, checkout, socket)
    try:
        for _ in range(400):
            if "listening on unix:" in (work / "cairnd.log").read_text():
                break
            if daemon.poll() is not None:
                raise RuntimeError("cairnd exited: " + (work / "cairnd.log").read_text())
            time.sleep(0.025)
        else:
            raise RuntimeError("cairnd did not start: " + (work / "cairnd.log").read_text())
        # One CI run: the generic stage, then math-libs for one family, pushed with the CLI.
        for stage, family, run in [
            ("compiler-runtime", "generic", RUN_GENERIC),
            ("math-libs", FAMILY, RUN_MATH),
        ]:
            out = work / f"build-{stage}"
            w.data("build-dir", "--checkout", str(checkout), "--stage", stage,
                   "--family", family, "--out", str(out), "--bytes", "8192")  # fmt: skip
            w.cli("push", "--checkout", str(checkout), "--stage", stage, "--family", family,
                  "--build-dir", str(out), "--run-id", run, "--platform", "linux",
                  "--workflow", "multi_arch_ci.yml", "--quiet")  # fmt: skip
        yield w
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def world() -> Iterator[World]:
    yield from _world("local")


@pytest.fixture(scope="session")
def s3_world() -> Iterator[World]:
    yield from _world("s3")
