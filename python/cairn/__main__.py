"""``python -m cairn``: drop-in flags for TheRock's scripts.

    python -m cairn fetch --stage math-libs --amdgpu-families "gfx94X-dcgpu" --output-dir build --bootstrap
    python -m cairn push --stage math-libs --amdgpu-families gfx94X-dcgpu --build-dir build --run-id 123
    python -m cairn find_artifacts_for_commit --commit SHA --artifact-group gfx94X-dcgpu
    python -m cairn fingerprint --checkout . --family gfx94X-dcgpu [--stage math-libs]

``fetch`` and ``push`` take ``artifact_manager.py``'s flags, ``find_artifacts_for_commit`` takes
``find_artifacts_for_commit.py``'s; each also takes ``--daemon`` and ``--checkout``. Exit status as
``cairn``: 0 success, 1 the answer is "no" (missing artifacts, nothing found, invalid topology),
2 error. Errors print as ``cairn: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from . import ArtifactRunInfo, Client, fingerprints
from .errors import CairnError, InvalidTopology, MissingArtifacts


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--daemon", help="cairnd address (default: $CAIRN_SOCKET, else the default socket)")
    p.add_argument("--checkout", help="the git checkout (default: the current git repository)")
    p.add_argument("--platform", choices=["linux", "windows"], help="default: this machine's")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cairn",
        description="Cairn with the flags of TheRock's artifact_manager.py (fetch, push) and "
        "find_artifacts_for_commit.py.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fetch = sub.add_parser("fetch", help="artifact_manager.py fetch: a stage's inbound artifacts")
    fetch.add_argument("--stage", help="the stage whose inbound artifacts are fetched")
    fetch.add_argument("--amdgpu-families", required=True, help='";"-separated GPU families')
    fetch.add_argument("--output-dir", required=True, help="destination (build dir with --bootstrap)")
    fetch.add_argument("--bootstrap", action="store_true", help="bootstrap layout with .prebuilt markers")
    fetch.add_argument("--flatten", action="store_true", help="one merged tree")
    fetch.add_argument("--run-id", help="use this run's artifact set")
    fetch.add_argument("--exclude-components", help='","-separated components to leave out')
    fetch.add_argument("--exclude-artifacts", help='","-separated artifacts to leave out')
    fetch.add_argument("--allow-missing", action="store_true", help="exit 0 even if some are missing")
    _common(fetch)

    push = sub.add_parser("push", help="artifact_manager.py push: publish a stage's artifacts")
    push.add_argument("--stage", required=True)
    push.add_argument("--amdgpu-families", required=True, help="the job's GPU family")
    push.add_argument("--build-dir", required=True)
    push.add_argument("--run-id", required=True)
    push.add_argument("--repo", default="ROCm/TheRock")
    push.add_argument("--commit")
    _common(push)

    find = sub.add_parser(
        "find_artifacts_for_commit",
        aliases=["find-artifacts-for-commit"],
        help="find_artifacts_for_commit.py: where a commit's artifacts are",
    )
    find.add_argument("--commit", required=True)
    find.add_argument("--repo", default="ROCm/TheRock")
    find.add_argument("--workflow")
    find.add_argument("--artifact-group", "--amdgpu-family", nargs="+", required=True, dest="groups")
    find.add_argument("--offline", action="store_true", help="Cairn's records only; never GitHub")
    find.add_argument("--json", action="store_true", help="one JSON array on stdout")
    _common(find)

    fp = sub.add_parser("fingerprint", help="cairn fingerprint --json")
    fp.add_argument("--family", required=True)
    fp.add_argument("--stage")
    fp.add_argument("--topology")
    _common(fp)
    return parser


def _print_info(info: ArtifactRunInfo) -> None:
    status = info.workflow_run_status
    if info.workflow_run_conclusion:
        status = f"{status} ({info.workflow_run_conclusion})"
    print("Artifact info:")
    for k, v in [
        ("Git repository", info.github_repository_name),
        ("Git commit", info.git_commit_sha),
        ("Git commit URL", info.git_commit_url),
        ("Platform", info.platform),
        ("Artifact group", info.amdgpu_family),
        ("Workflow name", info.workflow_file_name),
        ("Workflow run ID", info.workflow_run_id),
        ("Workflow run URL", info.workflow_run_html_url),
        ("Workflow run status", status),
        ("S3 Bucket", info.s3_bucket),
        ("S3 Path", info.s3_path),
        ("S3 Index", info.s3_index_url),
    ]:
        print(f"  {k + ':':<21}{v}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "fetch":
            client = Client(args.daemon)
            common = dict(
                checkout=args.checkout,
                platform=args.platform,
                run_id=args.run_id,
                exclude_components=args.exclude_components,
                exclude_artifacts=args.exclude_artifacts,
                allow_missing=args.allow_missing,
            )
            if args.bootstrap:
                if not args.stage:
                    raise CairnError("--bootstrap needs --stage")
                r = client.bootstrap(args.stage, args.amdgpu_families, args.output_dir, **common)
            else:
                r = client.fetch(
                    args.amdgpu_families, args.output_dir, stage=args.stage,
                    flatten=args.flatten, **common,
                )  # fmt: skip
            s = r.summary
            print(
                f"cairn: {r.command} into `{r.destination}`: {s.artifacts} artifact(s), "
                f"{s.missing} missing; {s.files} file(s); runs: {', '.join(s.runs) or 'none'}",
                file=sys.stderr,
            )
            return 1 if r.missing else 0
        if args.command == "push":
            published = Client(args.daemon).push(
                args.stage, args.amdgpu_families, args.build_dir, args.run_id,
                checkout=args.checkout, platform=args.platform, repo=args.repo, commit=args.commit,
            )  # fmt: skip
            for a in published.archives:
                print(f"{a.key}\t{a.compressed_size}\t{a.sha256}")
            return 0
        if args.command in ("find_artifacts_for_commit", "find-artifacts-for-commit"):
            client = Client(args.daemon)
            found = []
            for group in args.groups:
                info = client.find_artifacts_for_commit(
                    args.commit, args.repo, group, args.workflow, args.platform,
                    offline=args.offline, checkout=args.checkout,
                )  # fmt: skip
                if info is not None:
                    found.append(info)
            if args.json:
                print(json.dumps([asdict(i) for i in found], indent=2))
            else:
                for info in found:
                    _print_info(info)
                    print()
            if not found:
                print(
                    f"No artifacts found for commit {args.commit} "
                    f"(platform={args.platform}, artifact_group={args.groups})",
                    file=sys.stderr,
                )
                return 1
            return 0
        if args.command == "fingerprint":
            fps = fingerprints(
                args.checkout, args.family, args.stage, platform=args.platform,
                topology=args.topology,
            )  # fmt: skip
            print(json.dumps(fps, indent=2))
            return 0
    except MissingArtifacts as e:
        print(f"cairn: error: {e}", file=sys.stderr)
        return 1
    except InvalidTopology as e:
        for problem in e.problems:
            print(f"cairn: {problem}", file=sys.stderr)
        print(f"cairn: error: {e}", file=sys.stderr)
        return 1
    except CairnError as e:
        print(f"cairn: error: {e}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
