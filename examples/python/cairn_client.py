#!/usr/bin/env python3
"""A tiny Python client for cairnd, generated from proto/ with grpcio-tools.

This is the wire contract as any language sees it, without Cairn's crates. TheRock's scripts should
use the `cairn` package instead (`pip install ./python`, docs/python.md): it computes fingerprints
and materializes in process, with the CLI's rules. (The generated stubs live in the `cairn.v1`
namespace, so do not put them on the path of an environment where the `cairn` package is installed.)

This is how TheRock's Python build tooling would call Cairn: resolve the inbound artifacts of a build
stage to producing runs, then fetch them into a directory laid out like artifact_manager's default
extraction (OUTPUT/artifacts/{name}_{component}_{family}/, artifact_manifest.txt included).

Generate the stubs once (any directory on PYTHONPATH; needs `pip install grpcio grpcio-tools`):

    python -m grpc_tools.protoc -I proto/proto --python_out=STUBS --grpc_python_out=STUBS \
        proto/proto/cairn/v1/cairn.proto
    export PYTHONPATH=STUBS

(When the stubs are not importable and grpc_tools is installed, this script generates them itself into
a temporary directory from ../../proto.)

Commands (the daemon address is --socket PATH, or $CAIRN_SOCKET, or the daemon's default socket):

    cairn_client.py stats
    cairn_client.py resolve --stage math-libs --family gfx94X-dcgpu --fingerprints fp.json
    cairn_client.py fetch   --stage math-libs --family gfx94X-dcgpu --fingerprints fp.json \
        --output-dir build [--transfer chunks|paths] [--only blas_lib_gfx94X-dcgpu] [--verify-blake3]
    cairn_client.py publish --build-dir B --stage math-libs --family gfx94X-dcgpu --run-id 123 \
        --commit SHA --fingerprints fp.json

`fp.json` is what `cairn fingerprint --checkout . --family F --stage S --json` prints: an object
mapping artifact name to fingerprint; `--artifact NAME=FINGERPRINT` (repeatable) works too.

Fetch receives each blob either as bytes (`blob_chunk`, works from any machine) or as a path in the
daemon's store (`blob_path`, same machine only; faster). Every file written is checked against the
size in its tree entry. Checking content hashes is optional: `--verify-blake3` needs the `blake3`
package (`pip install blake3`); the daemon already verified every blob when it ingested the archive.

Over a Unix socket, gRPC's default authority (the socket path) works: cairnd ignores an authority
that is not a valid one (vendor/README.md) instead of resetting the stream.

Output: one JSON document on stdout; progress on stderr with -v. Exit status 0 success, 1 an artifact is
missing, 2 error (unreachable daemon, size or hash mismatch, bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

MAX_MESSAGE = 256 << 20  # trees of large artifacts exceed gRPC's 4 MiB default


def load_stubs():
    """Import the generated modules, generating them from the repository's proto/ if needed."""
    try:
        from cairn.v1 import cairn_pb2, cairn_pb2_grpc  # noqa: PLC0415
        return cairn_pb2, cairn_pb2_grpc
    except ImportError:
        pass
    proto_root = Path(__file__).resolve().parents[2] / "proto" / "proto"
    try:
        from grpc_tools import protoc  # noqa: PLC0415
    except ImportError:
        sys.exit("cairn_client: error: stubs `cairn.v1.cairn_pb2` not importable and grpc_tools "
                 "is not installed; see the module docstring")
    out = tempfile.mkdtemp(prefix="cairn-stubs-")
    rc = protoc.main(["protoc", f"-I{proto_root}", f"--python_out={out}",
                      f"--grpc_python_out={out}", str(proto_root / "cairn/v1/cairn.proto")])
    if rc != 0:
        sys.exit(f"cairn_client: error: protoc failed on `{proto_root}` (exit {rc})")
    sys.path.insert(0, out)
    from cairn.v1 import cairn_pb2, cairn_pb2_grpc  # noqa: PLC0415
    return cairn_pb2, cairn_pb2_grpc


pb, pb_grpc = load_stubs()
import grpc  # noqa: E402  (after the stubs: their import error message is the more useful one)


class Mismatch(Exception):
    """A received file does not match its tree entry."""


def default_target() -> str:
    env = os.environ.get("CAIRN_SOCKET")
    if env:
        return env if env.startswith(("unix:", "http://")) else f"unix:{env}"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return f"unix:{runtime}/cairn/cairnd.sock"
    return f"unix:{tempfile.gettempdir()}/cairn-{os.getuid()}/cairnd.sock"


def connect(args) -> "pb_grpc.CairnStub":
    target = f"unix:{os.path.abspath(args.socket)}" if args.socket else default_target()
    if target.startswith("http://"):
        target = target[len("http://"):]
    channel = grpc.insecure_channel(target, options=[
        # No `grpc.default_authority`: the default (the socket path) must work (vendor/README.md).
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ])
    return pb_grpc.CairnStub(channel)


def fingerprints(args) -> dict[str, str]:
    fps: dict[str, str] = {}
    if args.fingerprints:
        fps.update(json.loads(Path(args.fingerprints).read_text()))
    for pair in args.artifact or []:
        name, sep, fp = pair.partition("=")
        if not sep:
            sys.exit(f"cairn_client: error: `--artifact {pair}` is not NAME=FINGERPRINT")
        fps[name] = fp
    if not fps:
        sys.exit("cairn_client: error: no artifacts: pass --fingerprints FILE or --artifact NAME=FP")
    return fps


def resolve_request(args) -> "pb.ResolveRequest":
    excluded = [c for c in (args.exclude_components or "").replace(";", ",").split(",") if c]
    return pb.ResolveRequest(
        stage=args.stage,
        family=args.family,
        platform=args.platform,
        artifacts=[pb.ArtifactRequest(artifact=a, fingerprint=f)
                   for a, f in sorted(fingerprints(args).items())],
        policy=pb.Policy(allow_untrusted=args.allow_untrusted, run_id=args.run_id or ""),
        exclude_components=excluded,
    )


def resolved_json(resp) -> list[dict]:
    status = {pb.FOUND: "found", pb.MISSING: "missing"}
    return [{
        "artifact": a.artifact,
        "name": a.name,
        "status": status.get(a.status, "unspecified"),
        "run_id": a.producer.run_id if a.HasField("producer") else "",
        "key": a.producer.key if a.HasField("producer") else "",
        "tree_digest": a.tree_digest,
        "explanation": list(a.explanation),
    } for a in resp.artifacts]


def cmd_stats(args) -> int:
    from google.protobuf.json_format import MessageToDict

    s = connect(args).Stats(pb.StatsRequest())

    from google.protobuf.message import Message

    # Scalars as they are (numbers stay numbers); messages (warmup) and repeated messages (pins)
    # as dicts.
    def value(f):
        v = getattr(s, f.name)
        if isinstance(v, Message):
            return MessageToDict(v, preserving_proto_field_name=True)
        if f.message_type is not None:
            return [MessageToDict(m, preserving_proto_field_name=True) for m in v]
        return v

    print(json.dumps({f.name: value(f) for f in s.DESCRIPTOR.fields}, indent=2, sort_keys=True))
    return 0


def cmd_resolve(args) -> int:
    resp = connect(args).Resolve(resolve_request(args))
    artifacts = resolved_json(resp)
    print(json.dumps({"artifacts": artifacts, "runs": list(resp.runs)}, indent=2))
    return 1 if any(a["status"] != "found" for a in artifacts) else 0


def blake3_of(path: Path) -> str:
    import blake3  # noqa: PLC0415  (optional dependency)
    h = blake3.blake3()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cmd_fetch(args) -> int:
    if args.verify_blake3:
        try:
            import blake3  # noqa: F401, PLC0415
        except ImportError:
            sys.exit("cairn_client: error: --verify-blake3 needs the `blake3` package "
                     "(pip install blake3)")
    out = Path(args.output_dir).resolve()
    staging = out / ".cairn-blobs"  # chunked blobs land here before being placed
    staging.mkdir(parents=True, exist_ok=True)
    stub = connect(args)
    call = stub.Fetch(pb.FetchRequest(resolve=resolve_request(args),
                                      local_paths=args.transfer == "paths"))
    trees: list = []
    sizes: dict[str, int] = {}      # blake3 → expected size, from the trees
    blobs: dict[str, Path] = {}     # blake3 → where its bytes are now
    open_blob = None                # (digest, file, bytes so far) of the blob being streamed
    missing: list[str] = []
    summary = None
    try:
        for ev in call:
            kind = ev.WhichOneof("event")
            if kind == "resolved":
                missing = [a.artifact for a in ev.resolved.artifacts if a.status != pb.FOUND]
            elif kind == "progress":
                if args.verbose:
                    print(f"cairn_client: {ev.progress.artifact}: {ev.progress.message}",
                          file=sys.stderr)
            elif kind == "tree":
                trees.append(ev.tree)
                for e in ev.tree.entries:
                    if e.kind == "file":
                        sizes[e.blake3] = e.size
            elif kind == "blob_path":
                bp = ev.blob_path
                actual = os.stat(bp.path).st_size
                if actual != sizes.get(bp.blake3):
                    raise Mismatch(f"blob {bp.blake3} at `{bp.path}` has {actual} bytes, "
                                   f"its tree entry says {sizes.get(bp.blake3)}")
                blobs[bp.blake3] = Path(bp.path)
            elif kind == "blob_chunk":
                c = ev.blob_chunk
                if open_blob is None:
                    open_blob = [c.blake3, open(staging / c.blake3, "wb"), 0]
                elif open_blob[0] != c.blake3:
                    raise Mismatch(f"blob {open_blob[0]} ended without its last chunk")
                digest, f, done = open_blob
                if c.offset != done:
                    raise Mismatch(f"blob {digest}: chunk at offset {c.offset}, expected {done}")
                f.write(c.data)
                open_blob[2] += len(c.data)
                if c.last:
                    f.close()
                    if open_blob[2] != sizes.get(digest):
                        raise Mismatch(f"blob {digest}: received {open_blob[2]} bytes, its tree "
                                       f"entry says {sizes.get(digest)}")
                    blobs[digest] = staging / digest
                    open_blob = None
            elif kind == "summary":
                summary = ev.summary
                break
        if summary is None:
            raise Mismatch("the fetch stream ended without a summary")
        # Place the files while the stream is still open: until we close it the daemon holds a lease
        # on the blobs, so eviction cannot remove a `blob_path` before we copied it.
        written = place(trees, blobs, out, args)
    finally:
        # The daemon keeps the stream (and the leases) open until the client closes it.
        call.cancel()
    shutil.rmtree(staging, ignore_errors=True)
    print(json.dumps({
        "artifacts": written,
        "missing": missing,
        "summary": {
            "artifacts": summary.artifacts, "files": summary.files, "bytes": summary.bytes,
            "from_cas": summary.from_cas, "from_storage": summary.from_storage,
            "storage_bytes": summary.storage_bytes, "runs": list(summary.runs),
        },
        "transfer": args.transfer,
        "verified": "blake3" if args.verify_blake3 else "size",
    }, indent=2, sort_keys=True))
    return 1 if missing else 0


def entry_path(e) -> str:
    """The entry's path: names are bytes, and one that is not UTF-8 comes in `path_bytes` (then
    `path` is empty); `os.fsdecode` maps its bytes to a str that names exactly those bytes."""
    return os.fsdecode(e.path_bytes) if e.path_bytes else e.path


def entry_target(e) -> str:
    """The link target, byte-exact like `entry_path`."""
    return os.fsdecode(e.link_target_bytes) if e.link_target_bytes else e.link_target


def place(trees, blobs: dict[str, Path], out: Path, args) -> dict:
    """Write each tree under out/artifacts/{artifact}/; returns {artifact: {files, bytes, tree}}."""
    written = {}
    for tree in trees:
        if args.only and tree.artifact not in args.only:
            continue
        root = out / "artifacts" / tree.artifact
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        files = total = 0
        links = []
        for e in tree.entries:  # sorted by path: a directory precedes its content
            dest = root / entry_path(e)
            if e.kind == "dir":
                dest.mkdir(parents=True, exist_ok=True)
            elif e.kind == "symlink":
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(entry_target(e), dest)
            elif e.kind == "hardlink":
                links.append(e)
            elif e.kind == "file":
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = blobs.get(e.blake3)
                if src is None:
                    raise Mismatch(f"`{tree.artifact}/{entry_path(e)}`: blob {e.blake3} was not "
                                   "received")
                shutil.copyfile(src, dest)
                os.chmod(dest, stat.S_IMODE(e.mode) | stat.S_IRUSR | stat.S_IWUSR)
                size = dest.stat().st_size
                if size != e.size:
                    raise Mismatch(f"`{dest}` has {size} bytes, its tree entry says {e.size}")
                if args.verify_blake3 and blake3_of(dest) != e.blake3:
                    raise Mismatch(f"`{dest}`: content does not hash to {e.blake3}")
                files += 1
                total += size
        for e in links:
            dest = root / entry_path(e)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / entry_target(e), dest)
        written[tree.artifact] = {"files": files, "bytes": total, "tree": tree.tree_digest,
                                  "source": tree.source, "run_id": tree.run_id}
    return written


def cmd_publish(args) -> int:
    resp = connect(args).Publish(pb.PublishRequest(
        build_dir=str(Path(args.build_dir).resolve()),
        stage=args.stage, family=args.family, platform=args.platform,
        repo=args.repo, workflow=args.workflow, run_id=args.run_id, commit=args.commit,
        fingerprints=fingerprints(args),
    ))
    print(json.dumps({
        "bucket": resp.bucket, "prefix": resp.prefix, "trusted": resp.trusted,
        "archives": [{"artifact": a.artifact, "key": a.key, "sha256": a.sha256,
                      "files": a.files, "tree_digest": a.tree_digest} for a in resp.archives],
    }, indent=2))
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--socket", help="cairnd's Unix socket (default: $CAIRN_SOCKET or the daemon's)")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("stats", help="store usage and counters")

    def selection(sp, run_id=True):
        sp.add_argument("--stage", required=True)
        sp.add_argument("--family", "--amdgpu-family", default="generic")
        sp.add_argument("--platform", default="linux")
        sp.add_argument("--fingerprints", metavar="FILE",
                        help="JSON object artifact → fingerprint (`cairn fingerprint --json`)")
        sp.add_argument("--artifact", action="append", metavar="NAME=FP")
        sp.add_argument("--exclude-components", metavar="a,b", help="e.g. dbg,test")
        sp.add_argument("--allow-untrusted", action="store_true")
        if run_id:
            sp.add_argument("--run-id", help="only this run may be used")

    selection(sub.add_parser("resolve", help="map a stage's artifacts to producing runs"))
    f = sub.add_parser("fetch", help="resolve, then write the artifacts' files")
    selection(f)
    f.add_argument("--output-dir", required=True)
    f.add_argument("--transfer", choices=["chunks", "paths"], default="chunks",
                   help="blob bytes over the socket, or paths in the daemon's store (same machine)")
    f.add_argument("--only", action="append", metavar="ARCHIVE",
                   help="write only this archive's files, e.g. blas_lib_gfx94X-dcgpu (repeatable)")
    f.add_argument("--verify-blake3", action="store_true",
                   help="also hash every file (needs `pip install blake3`); sizes are always checked")

    pub = sub.add_parser("publish", help="publish a build directory's artifacts as a run")
    selection(pub, run_id=False)
    pub.add_argument("--build-dir", required=True)
    pub.add_argument("--run-id", required=True)
    pub.add_argument("--commit", required=True)
    pub.add_argument("--repo", "--run-github-repo", default="ROCm/TheRock")
    pub.add_argument("--workflow", default="multi_arch_ci.yml")

    args = p.parse_args()
    try:
        return {"stats": cmd_stats, "resolve": cmd_resolve, "fetch": cmd_fetch,
                "publish": cmd_publish}[args.command](args)
    except grpc.RpcError as e:
        print(f"cairn_client: error: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    except (Mismatch, OSError) as e:
        print(f"cairn_client: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
