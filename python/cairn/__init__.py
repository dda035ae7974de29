"""Cairn for Python: TheRock's artifact questions answered in process.

    from cairn import Client, find_artifacts_for_commit, fingerprints

    info = find_artifacts_for_commit(commit, "ROCm/TheRock", "gfx94X-dcgpu")
    Client().bootstrap("math-libs", "gfx94X-dcgpu", "build", run_id=info.workflow_run_id)

Fingerprints, the topology and the run layout are computed by Cairn's Rust crates inside this
process; :class:`Client` talks to the machine's ``cairnd`` and materializes through the same Rust
code as the ``cairn`` command. No ``cairn`` binary is needed.
"""

from ._native import __version__
from .client import ArtifactRunInfo, Client, explain, find_artifacts_for_commit, fingerprints
from .errors import CairnError, DaemonUnavailable, InvalidTopology, MissingArtifacts
from .layout import OutputLocation, RunOutputRoot
from .topology import Topology
from .types import (
    Explanation,
    FetchedTree,
    FetchResult,
    GcOutcome,
    Imported,
    ImportFailure,
    Input,
    PinInfo,
    Producer,
    Published,
    PublishedArchive,
    Resolved,
    ResolveResult,
    Stats,
    Summary,
    WarmupStats,
)

__all__ = [
    "__version__",
    "ArtifactRunInfo",
    "CairnError",
    "Client",
    "DaemonUnavailable",
    "Explanation",
    "FetchResult",
    "FetchedTree",
    "GcOutcome",
    "Imported",
    "ImportFailure",
    "Input",
    "InvalidTopology",
    "MissingArtifacts",
    "OutputLocation",
    "PinInfo",
    "Producer",
    "Published",
    "PublishedArchive",
    "ResolveResult",
    "Resolved",
    "RunOutputRoot",
    "Stats",
    "Summary",
    "Topology",
    "WarmupStats",
    "explain",
    "find_artifacts_for_commit",
    "fingerprints",
]
