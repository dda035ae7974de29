"""Fingerprints, find and the daemon client: every call runs Cairn's Rust library in process (the
code behind the ``cairn`` command), so results, messages and materialization rules are the CLI's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, Iterable, Union

from . import _native
from .types import (
    Explanation,
    FetchResult,
    GcOutcome,
    Imported,
    Published,
    ResolveResult,
    Stats,
)

PathArg = Union[str, "PathLike[str]"]


def _path(p: PathArg | None) -> str | None:
    return None if p is None else fspath(p)


def _families(f: str | Iterable[str]) -> list[str]:
    """``"a;b"``/``"a,b"`` (TheRock's spelling) or a list."""
    items = f.replace(",", ";").split(";") if isinstance(f, str) else list(f)
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item and item not in out:
            out.append(item)
    return out


def _list(v: str | Iterable[str] | None) -> list[str]:
    if v is None:
        return []
    return _families(v)


def fingerprints(
    checkout: PathArg | None,
    family: str,
    stage: str | None = None,
    *,
    artifacts: Iterable[str] | None = None,
    platform: str | None = None,
    variant: str = "release",
    topology: PathArg | None = None,
) -> dict[str, str]:
    """``cairn fingerprint --json``: artifact name → ``cairn-fp-v1`` fingerprint.

    With ``stage``: its inbound and produced artifacts; else ``artifacts``; else every artifact.
    The topology is the checkout's own ``BUILD_TOPOLOGY.toml`` unless ``topology`` is given.
    """
    fps: dict[str, str] = json.loads(
        _native.fingerprints(
            family,
            _path(checkout),
            stage,
            None if artifacts is None else list(artifacts),
            platform,
            variant,
            _path(topology),
        )
    )
    return fps


def explain(
    checkout: PathArg | None,
    artifact: str,
    family: str,
    *,
    platform: str | None = None,
    variant: str = "release",
    topology: PathArg | None = None,
) -> Explanation:
    """``cairn fingerprint explain --json``: every input of one artifact's fingerprint."""
    doc = json.loads(
        _native.explain(artifact, family, _path(checkout), platform, variant, _path(topology))
    )
    return Explanation.from_dict(doc)


@dataclass
class ArtifactRunInfo:
    """Where one GPU family's artifacts of a commit are: TheRock's ``ArtifactRunInfo``."""

    git_commit_sha: str
    github_repository_name: str
    external_repo: str
    platform: str
    amdgpu_family: str
    workflow_file_name: str
    workflow_run_id: str
    workflow_run_status: str
    workflow_run_conclusion: str | None
    workflow_run_html_url: str
    s3_bucket: str
    source: str = "cairn"
    """``cairn`` (Cairn's commit index) or ``github`` (a run published without Cairn)."""
    trusted: bool = True
    artifacts: list[str] = field(default_factory=list)
    """The run's archive file names that belong to the family."""

    @property
    def artifact_group(self) -> str:
        """TheRock's older name for :attr:`amdgpu_family`."""
        return self.amdgpu_family

    @property
    def git_commit_url(self) -> str:
        return f"https://github.com/{self.github_repository_name}/commit/{self.git_commit_sha}"

    @property
    def s3_path(self) -> str:
        """``{external_repo}{run_id}-{platform}/``."""
        return f"{self.external_repo}{self.workflow_run_id}-{self.platform}/"

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.s3_bucket}/{self.s3_path.rstrip('/')}"

    @property
    def s3_index_url(self) -> str:
        return f"https://{self.s3_bucket}.s3.amazonaws.com/{self.s3_path}index.html"

    @classmethod
    def from_cairn(cls, r: dict[str, Any]) -> ArtifactRunInfo:
        """From one ``results[]`` entry of ``cairn find --json``."""
        return cls(
            git_commit_sha=r["commit"],
            github_repository_name=r["repo"],
            external_repo=r["external_repo"],
            platform=r["platform"],
            amdgpu_family=r["family"],
            workflow_file_name=r["workflow"],
            workflow_run_id=r["run_id"],
            workflow_run_status=r["run_status"],
            workflow_run_conclusion=r["run_conclusion"],
            workflow_run_html_url=r["run_url"] or "",
            s3_bucket=r["bucket"],
            source=r["source"],
            trusted=r["trusted"],
            artifacts=list(r["artifacts"]),
        )


class Client:
    """A client of one ``cairnd``.

    ``daemon`` is an address as ``cairn --daemon`` takes it (``unix:/path``, a socket path, or
    ``http://host:port``); by default ``$CAIRN_SOCKET``, else the daemon's default socket.
    """

    def __init__(self, daemon: str | PathLike[str] | None = None) -> None:
        self.daemon = None if daemon is None else fspath(daemon)

    def __repr__(self) -> str:
        return f"Client(daemon={self.daemon!r})"

    @staticmethod
    def _select(
        amdgpu_families: str | Iterable[str],
        checkout: PathArg | None,
        topology: PathArg | None,
        platform: str | None,
        variant: str,
        exclude_artifacts: str | Iterable[str] | None,
        exclude_components: str | Iterable[str] | None,
        run_id: str | None,
        allow_untrusted: bool,
        allow_failed: bool,
    ) -> dict[str, Any]:
        return {
            "checkout": _path(checkout),
            "topology": _path(topology),
            "families": _families(amdgpu_families),
            "platform": platform,
            "variant": variant,
            "exclude_artifacts": _list(exclude_artifacts),
            "exclude_components": _list(exclude_components),
            "run_id": None if run_id is None else str(run_id),
            "allow_untrusted": allow_untrusted,
            "allow_failed": allow_failed,
        }

    def resolve(
        self,
        stage: str,
        amdgpu_families: str | Iterable[str],
        *,
        checkout: PathArg | None = None,
        topology: PathArg | None = None,
        platform: str | None = None,
        variant: str = "release",
        exclude_artifacts: str | Iterable[str] | None = None,
        exclude_components: str | Iterable[str] | None = None,
        run_id: str | None = None,
        allow_untrusted: bool = False,
        allow_failed: bool = False,
    ) -> ResolveResult:
        """``cairn resolve``: which run each inbound artifact would come from, and why.

        Missing artifacts are listed in ``missing``; nothing is raised for them.
        """
        select = self._select(
            amdgpu_families, checkout, topology, platform, variant, exclude_artifacts,
            exclude_components, run_id, allow_untrusted, allow_failed,
        )  # fmt: skip
        return ResolveResult.from_dict(json.loads(_native.resolve(self.daemon, stage, select)))

    def _fetch(
        self,
        stage: str | None,
        amdgpu_families: str | Iterable[str],
        destination: PathArg,
        layout: str,
        allow_missing: bool,
        hardlink: bool,
        full: bool,
        verify: bool,
        select: dict[str, Any],
    ) -> FetchResult:
        write = {
            "layout": layout,
            "hardlink": hardlink,
            "full": full,
            "verify": verify,
            "allow_missing": allow_missing,
        }
        doc = _native.fetch(self.daemon, stage, fspath(destination), select, write)
        return FetchResult.from_dict(json.loads(doc))

    def bootstrap(
        self,
        stage: str,
        amdgpu_families: str | Iterable[str],
        output_dir: PathArg,
        *,
        checkout: PathArg | None = None,
        topology: PathArg | None = None,
        platform: str | None = None,
        variant: str = "release",
        exclude_artifacts: str | Iterable[str] | None = None,
        exclude_components: str | Iterable[str] | None = None,
        run_id: str | None = None,
        allow_untrusted: bool = False,
        allow_failed: bool = False,
        allow_missing: bool = False,
        hardlink: bool = False,
        full: bool = False,
        verify: bool = False,
    ) -> FetchResult:
        """``cairn bootstrap``: fill build dir ``output_dir`` with the inbound artifacts of
        ``stage`` (TheRock's bootstrap layout with ``.prebuilt`` markers).

        Raises :class:`~cairn.MissingArtifacts` when some have no producer (after materializing
        everything found), unless ``allow_missing``.
        """
        select = self._select(
            amdgpu_families, checkout, topology, platform, variant, exclude_artifacts,
            exclude_components, run_id, allow_untrusted, allow_failed,
        )  # fmt: skip
        return self._fetch(
            stage, amdgpu_families, output_dir, "bootstrap", allow_missing, hardlink, full,
            verify, select,
        )  # fmt: skip

    def fetch(
        self,
        amdgpu_families: str | Iterable[str],
        output_dir: PathArg,
        *,
        stage: str | None = None,
        flatten: bool = False,
        checkout: PathArg | None = None,
        topology: PathArg | None = None,
        platform: str | None = None,
        variant: str = "release",
        exclude_artifacts: str | Iterable[str] | None = None,
        exclude_components: str | Iterable[str] | None = None,
        run_id: str | None = None,
        allow_untrusted: bool = False,
        allow_failed: bool = False,
        allow_missing: bool = False,
        hardlink: bool = False,
        full: bool = False,
        verify: bool = False,
    ) -> FetchResult:
        """``cairn fetch``: ``output_dir/artifacts/{name}_{component}_{family}/`` (or one merged
        tree with ``flatten``) for ``stage``'s inbound artifacts, or every artifact."""
        select = self._select(
            amdgpu_families, checkout, topology, platform, variant, exclude_artifacts,
            exclude_components, run_id, allow_untrusted, allow_failed,
        )  # fmt: skip
        layout = "flatten" if flatten else "plain"
        return self._fetch(
            stage, amdgpu_families, output_dir, layout, allow_missing, hardlink, full, verify,
            select,
        )  # fmt: skip

    def push(
        self,
        stage: str,
        amdgpu_family: str,
        build_dir: PathArg,
        run_id: str,
        *,
        checkout: PathArg | None = None,
        topology: PathArg | None = None,
        platform: str | None = None,
        variant: str = "release",
        repo: str = "ROCm/TheRock",
        head_repo: str | None = None,
        workflow: str = "",
        commit: str | None = None,
        status: str = "success",
        compression: str = "zstd",
    ) -> Published:
        """``cairn push``: publish what ``stage`` produced in ``build_dir`` as part of run ``run_id``."""
        doc = _native.push(
            self.daemon, stage, amdgpu_family, fspath(build_dir), str(run_id), _path(checkout),
            _path(topology), platform, variant, repo, head_repo, workflow, commit, status,
            compression,
        )  # fmt: skip
        return Published.from_dict(json.loads(doc))

    def import_run(
        self,
        run_id: str,
        *,
        platform: str | None = None,
        repo: str | None = None,
        ingest: bool = False,
    ) -> Imported:
        """``cairn import``: list a run published without Cairn (``ingest``: download it now)."""
        doc = _native.import_run(self.daemon, str(run_id), platform, repo, ingest)
        return Imported.from_dict(json.loads(doc))

    def status(self) -> Stats:
        """``cairn status``."""
        return Stats.from_dict(json.loads(_native.status(self.daemon)))

    def gc(self, max_bytes: int | str | None = None) -> GcOutcome:
        """``cairn gc [--max-bytes N]`` (``"50G"``, ``"1.5GiB"`` or a number of bytes)."""
        quota = None if max_bytes is None else str(max_bytes)
        return GcOutcome.from_dict(json.loads(_native.gc(self.daemon, quota)))

    def find(
        self,
        commit: str,
        amdgpu_families: str | Iterable[str] = (),
        *,
        repo: str | None = None,
        workflow: str | None = None,
        platform: str | None = None,
        checkout: PathArg | None = None,
        offline: bool = False,
        require_successful_run: bool = False,
        allow_untrusted: bool = False,
    ) -> dict[str, Any]:
        """``cairn find --json --commit C``: the whole ``cairn-find-v1`` document."""
        doc = _native.find(
            self.daemon, commit, repo, _families(amdgpu_families), workflow, platform,
            _path(checkout), offline, require_successful_run, allow_untrusted,
        )  # fmt: skip
        report: dict[str, Any] = json.loads(doc)
        return report

    def find_artifacts_for_commit(
        self,
        commit: str,
        repo: str | None = "ROCm/TheRock",
        amdgpu_family: str = "",
        workflow: str | None = None,
        platform: str | None = None,
        **kwargs: Any,
    ) -> ArtifactRunInfo | None:
        """:func:`cairn.find_artifacts_for_commit` through this client's daemon."""
        families = [amdgpu_family] if amdgpu_family else []
        report = self.find(
            commit, families, repo=repo, workflow=workflow, platform=platform, **kwargs
        )
        if report["status"] != "found" or not report["results"]:
            return None
        return ArtifactRunInfo.from_cairn(report["results"][0])


def find_artifacts_for_commit(
    commit: str,
    repo: str | None = "ROCm/TheRock",
    amdgpu_family: str = "",
    workflow: str | None = None,
    platform: str | None = None,
    *,
    daemon: str | None = None,
    offline: bool = False,
    checkout: PathArg | None = None,
    require_successful_run: bool = False,
    allow_untrusted: bool = False,
) -> ArtifactRunInfo | None:
    """The run holding ``amdgpu_family``'s artifacts for ``commit``, or ``None``.

    The lookup of ``cairn find``: Cairn's commit index first, then GitHub's workflow runs of the
    commit (unless ``offline``). ``workflow`` defaults as TheRock's (``multi_arch_ci.yml``;
    ``therock-ci.yml`` for rocm-libraries and rocm-systems); ``platform`` to this machine's.
    ``commit`` is a full SHA or any revision of ``checkout`` (default: the current directory).
    """
    return Client(daemon).find_artifacts_for_commit(
        commit,
        repo,
        amdgpu_family,
        workflow,
        platform,
        offline=offline,
        checkout=checkout,
        require_successful_run=require_successful_run,
        allow_untrusted=allow_untrusted,
    )
