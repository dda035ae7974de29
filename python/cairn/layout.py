"""Where a CI run's outputs live: TheRock's ``RunOutputRoot`` and ``OutputLocation``.

The bucket rules (which bucket, which ``external_repo`` prefix, whether the run is trusted) are
Cairn's Rust implementation (``fingerprint/src/layout.rs``, the same as ``cairn layout``); the
object keys below a run's prefix are the fixed formats of that file.
"""

from __future__ import annotations

import json
import os
import platform as _platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _native
from .errors import CairnError


@dataclass(frozen=True)
class OutputLocation:
    """One object (or directory) of a run: an S3 URI, an HTTPS URL or a local path."""

    bucket: str
    relative_path: str

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.relative_path}"

    @property
    def https_url(self) -> str:
        return f"https://{self.bucket}.s3.amazonaws.com/{self.relative_path}"

    def local_path(self, staging_dir: Path) -> Path:
        return Path(staging_dir) / self.relative_path


@dataclass(frozen=True)
class RunOutputRoot:
    """The root of one CI run's outputs: ``{bucket}/{external_repo}{run_id}-{platform}/``."""

    bucket: str
    external_repo: str
    run_id: str
    platform: str
    trusted: bool = True

    @classmethod
    def from_workflow_run(
        cls,
        run_id: str,
        platform: str | None = None,
        github_repository: str | None = None,
        workflow_run: dict[str, Any] | None = None,
        *,
        head_repository: str | None = None,
        release_type: str | None = None,
        legacy: bool = False,
    ) -> RunOutputRoot:
        """Apply TheRock's bucket rules to a run (``cairn layout``).

        ``github_repository`` defaults to ``$GITHUB_REPOSITORY``, else ``ROCm/TheRock``;
        ``release_type`` to ``$RELEASE_TYPE``. A GitHub ``workflow_run`` dict supplies the head
        repository (forks) and ``updated_at`` (legacy rules' bucket cutover).
        """
        repo = github_repository or os.environ.get("GITHUB_REPOSITORY") or "ROCm/TheRock"
        updated_at = None
        if workflow_run is not None:
            head_repository = head_repository or workflow_run.get("head_repository", {}).get(
                "full_name"
            )
            updated_at = workflow_run.get("updated_at")
        try:
            doc = json.loads(
                _native.run_output_root(
                    str(run_id),
                    platform,
                    repo,
                    head_repository,
                    release_type
                    if release_type is not None
                    else os.environ.get("RELEASE_TYPE") or None,
                    updated_at,
                    legacy,
                )
            )
        except ValueError as e:
            raise CairnError(str(e)) from None
        return cls(**doc)

    @classmethod
    def for_local(
        cls, run_id: str = "local", platform: str | None = None, bucket: str = "local"
    ) -> RunOutputRoot:
        """A run in a local staging directory (untrusted: it comes from a developer machine)."""
        return cls(bucket, "", run_id, platform or _platform.system().lower(), trusted=False)

    # -- the run root ------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """``{external_repo}{run_id}-{platform}`` (no trailing slash)."""
        return f"{self.external_repo}{self.run_id}-{self.platform}"

    @property
    def s3_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def https_url(self) -> str:
        return f"https://{self.bucket}.s3.amazonaws.com/{self.prefix}"

    def root(self) -> OutputLocation:
        return OutputLocation(self.bucket, self.prefix)

    def local_path(self, staging_dir: Path) -> Path:
        return Path(staging_dir) / self.prefix

    # -- archives ----------------------------------------------------------------------------

    def artifact(self, filename: str) -> OutputLocation:
        return OutputLocation(self.bucket, self.artifact_s3_key(filename))

    def artifact_s3_key(self, filename: str) -> str:
        """``{prefix}/{filename}``: an archive (or any file at the run root)."""
        return f"{self.prefix}/{filename}"

    def sha256sum_s3_key(self, archive_filename: str) -> str:
        """``{prefix}/{archive}.sha256sum``."""
        return f"{self.prefix}/{archive_filename}.sha256sum"

    def artifact_index(self, artifact_group: str | None = None) -> OutputLocation:
        """``{prefix}/index.html`` (multi-arch CI), or ``index-{group}.html`` (single-stage CI)."""
        name = "index.html" if artifact_group is None else f"index-{artifact_group}.html"
        return OutputLocation(self.bucket, f"{self.prefix}/{name}")

    # -- logs, manifests, packages -----------------------------------------------------------

    def log_dir(self, artifact_group: str) -> OutputLocation:
        return OutputLocation(self.bucket, f"{self.prefix}/logs/{artifact_group}")

    def log_file(self, artifact_group: str, filename: str) -> OutputLocation:
        return OutputLocation(self.bucket, f"{self.prefix}/logs/{artifact_group}/{filename}")

    def manifest(self, artifact_group: str) -> OutputLocation:
        return OutputLocation(
            self.bucket, f"{self.prefix}/manifests/{artifact_group}/therock_manifest.json"
        )

    def python_packages(self, artifact_group: str) -> OutputLocation:
        return OutputLocation(self.bucket, f"{self.prefix}/python/{artifact_group}")

    # -- Cairn's records ---------------------------------------------------------------------

    def job_manifest_s3_key(self, stage: str, family: str) -> str:
        """Cairn's job manifest: ``{prefix}/cairn/{stage}-{family}.json``."""
        return f"{self.prefix}/cairn/{stage}-{family}.json"
