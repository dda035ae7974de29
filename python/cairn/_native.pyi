"""Type stubs of ``cairn._native``, the PyO3 module built from ``python/src/lib.rs``.

Functions return the JSON document ``cairn --json`` prints; ``cairn.client`` parses it.
Failures raise the exceptions of ``cairn.errors``.
"""

from os import PathLike
from pathlib import Path
from typing import Any

__version__: str

class Topology:
    def __init__(self, path: str | PathLike[str]) -> None: ...
    @property
    def path(self) -> Path: ...
    @property
    def stages(self) -> list[str]: ...
    @property
    def artifact_groups(self) -> list[str]: ...
    @property
    def artifacts(self) -> list[str]: ...
    def inbound(self, stage: str) -> list[str]: ...
    def produced(self, stage: str) -> list[str]: ...
    def build_order(self) -> list[str]: ...
    def validate(self) -> list[str]: ...

def fingerprints(
    family: str,
    checkout: str | None = None,
    stage: str | None = None,
    artifacts: list[str] | None = None,
    platform: str | None = None,
    variant: str = "release",
    topology: str | None = None,
) -> str: ...
def explain(
    artifact: str,
    family: str,
    checkout: str | None = None,
    platform: str | None = None,
    variant: str = "release",
    topology: str | None = None,
) -> str: ...
def run_output_root(
    run_id: str,
    platform: str | None = None,
    github_repository: str = "ROCm/TheRock",
    head_repository: str | None = None,
    release_type: str | None = None,
    updated_at: str | None = None,
    legacy: bool = False,
) -> str: ...
def resolve(daemon: str | None, stage: str, select: dict[str, Any]) -> str: ...
def fetch(
    daemon: str | None,
    stage: str | None,
    destination: str,
    select: dict[str, Any],
    write: dict[str, Any],
) -> str: ...
def push(
    daemon: str | None,
    stage: str,
    family: str,
    build_dir: str,
    run_id: str,
    checkout: str | None = None,
    topology: str | None = None,
    platform: str | None = None,
    variant: str = "release",
    repo: str = "ROCm/TheRock",
    head_repo: str | None = None,
    workflow: str = "",
    commit: str | None = None,
    status: str = "success",
    compression: str = "zstd",
) -> str: ...
def import_run(
    daemon: str | None,
    run_id: str,
    platform: str | None = None,
    repo: str | None = None,
    ingest: bool = False,
) -> str: ...
def status(daemon: str | None) -> str: ...
def gc(daemon: str | None, max_bytes: str | None = None) -> str: ...
def find(
    daemon: str | None,
    commit: str,
    repo: str | None,
    families: list[str],
    workflow: str | None = None,
    platform: str | None = None,
    checkout: str | None = None,
    offline: bool = False,
    require_successful_run: bool = False,
    allow_untrusted: bool = False,
) -> str: ...
