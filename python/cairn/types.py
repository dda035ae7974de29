"""The results of :class:`cairn.Client`: dataclasses with exactly the fields of ``cairn --json``.

Each document is documented where the `cairn` command defines it (``client/src/documents.rs``,
``client/src/api.rs``, ``client/src/fetch.rs``); :meth:`from_dict` builds one from the parsed JSON,
nested documents included.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

T = TypeVar("T")


def _convert(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin is Union or origin is types.UnionType:
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        return [_convert(args[0], v) for v in value]
    if origin is dict:
        return {k: _convert(args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value)
    return value


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` with nested documents converted by the field types."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


class _Document:
    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from a parsed ``cairn --json`` document (unknown keys are ignored)."""
        return _build(cls, data)


@dataclass(frozen=True)
class Producer(_Document):
    """The run that produced an archive, and where it is."""

    repo: str
    workflow: str
    run_id: str
    commit: str
    platform: str
    status: str
    bucket: str
    key: str
    compressed_size: int
    uncompressed_size: int
    built_here: bool
    trusted: bool
    published_at: str
    reused_from_run_id: str = ""


@dataclass(frozen=True)
class Resolved(_Document):
    """One archive found (``status == "found"``) or one artifact missing, with the explanation."""

    artifact: str
    name: str
    component: str
    family: str
    fingerprint: str
    status: str
    explanation: list[str]
    producer: Producer | None = None
    tree_digest: str = ""


@dataclass(frozen=True)
class FetchedTree(_Document):
    """One archive materialized."""

    artifact: str
    tree_digest: str
    source: str
    run_id: str
    files: int
    bytes: int


@dataclass(frozen=True)
class Summary(_Document):
    """Totals of a bootstrap or fetch (what ``cairn`` prints on stderr)."""

    artifacts: int
    missing: int
    files: int
    bytes: int
    files_written: int
    bytes_written: int
    files_unchanged: int
    files_removed: int
    files_verified: int
    files_repaired: int
    from_cas: int
    from_storage: int
    storage_bytes: int
    received_bytes: int
    runs: list[str]
    elapsed_ms: int
    files_prestaged: int = 0


@dataclass(frozen=True)
class FetchResult(_Document):
    """``cairn bootstrap --json`` / ``cairn fetch --json``."""

    command: str
    stage: str | None
    families: list[str]
    platform: str
    destination: str
    layout: str
    daemon: str
    checkout_head: str
    fingerprints: dict[str, dict[str, str]]
    resolved: list[Resolved]
    missing: list[Resolved]
    trees: list[FetchedTree]
    summary: Summary


@dataclass(frozen=True)
class ResolveResult(_Document):
    """``cairn resolve --json``."""

    command: str
    stage: str
    families: list[str]
    platform: str
    daemon: str
    checkout_head: str
    fingerprints: dict[str, dict[str, str]]
    resolved: list[Resolved]
    missing: list[Resolved]
    runs: list[str]
    elapsed_ms: int


@dataclass(frozen=True)
class PublishedArchive(_Document):
    """One archive a push wrote."""

    artifact: str
    key: str
    sha256: str
    compressed_size: int
    uncompressed_size: int
    files: int
    tree_digest: str
    fingerprint: str
    built_here: bool
    # The run that built it, for an archive the job reused (absent from the JSON when built here).
    reused_from_run_id: str = ""


@dataclass(frozen=True)
class Published(_Document):
    """``cairn push --json``."""

    bucket: str
    prefix: str
    archives: list[PublishedArchive]
    job_manifest_key: str
    trusted: bool


@dataclass(frozen=True)
class ImportFailure(_Document):
    """An archive ``import --ingest`` could not make local."""

    key: str
    message: str


@dataclass(frozen=True)
class Imported(_Document):
    """``cairn import --json``."""

    prefix: str
    archives: list[str]
    ingested: int
    failures: list[ImportFailure]


@dataclass(frozen=True)
class PinInfo(_Document):
    """A pin the daemon holds (``cairn pin``)."""

    name: str
    trees: int
    blobs: int
    bytes: int
    expires_at: int


@dataclass(frozen=True)
class WarmupStats(_Document):
    """What the daemon's predictive warm-up has done (``cairn status --json``'s ``warmup``)."""

    enabled: bool
    branches: list[str]
    last_poll: str
    last_run: dict[str, str]
    prefetched_bytes: int
    prefetched_archives: int
    already_local_archives: int
    skipped_quota_archives: int
    hits: int
    wasted_bytes: int
    polls: int
    last_error: str


@dataclass(frozen=True)
class Stats(_Document):
    """``cairn status --json``."""

    daemon: str
    store_bytes: int
    blobs: int
    max_bytes: int
    trees: int
    hits: int
    misses: int
    storage_gets: int
    storage_bytes: int
    in_flight: int
    ingests: int
    evicted_blobs: int
    evicted_bytes: int
    resolve_requests: int
    fetch_requests: int
    leased_bytes: int
    leased_blobs: int
    quota_state: str
    pins: list[PinInfo]
    warmup: WarmupStats


@dataclass(frozen=True)
class GcOutcome(_Document):
    """``cairn gc --json``."""

    evicted_blobs: int
    evicted_bytes: int
    store_bytes: int


@dataclass(frozen=True)
class Input(_Document):
    """One input of a fingerprint."""

    kind: str
    name: str
    value: str


@dataclass(frozen=True)
class Explanation(_Document):
    """``cairn fingerprint explain --json``."""

    artifact: str
    family: str
    platform: str
    scheme: str
    fingerprint: str
    inputs: list[Input] = field(default_factory=list)
