#!/usr/bin/env python3
"""Baseline for the cold-fetch benchmarks: TheRock's own `artifact_manager.py fetch --bootstrap`.

It mirrors ROCm/TheRock `build_tools/artifact_manager.py` at commit 06f2b19f9401 (`do_fetch`,
`download_artifact`, `extract_artifact`, `BootstrappingPopulator`), with the populator of
`_therock_utils/artifacts.py` at 2c8851472b66 and the backends of `_therock_utils/artifact_backend.py`
at 0352e56ee50d:

- listing: one paginated ListObjectsV2 over the run prefix (no delimiter), archive basenames kept
  (`.tar.zst` preferred over `.tar.xz`); with `--local-staging-dir`, a directory listing instead;
- downloads: `s3.download_file` (boto3's managed transfer: ranged parts of 8 MiB, 10 threads per
  object) on a `ThreadPoolExecutor(max_workers=--download-concurrency)` (TheRock's default 10; client
  `max_pool_connections=100`) into `OUT/.download_cache/`; the local staging backend copies the
  archive and its `.sha256sum` with `shutil.copy2`;
- the pipeline: each archive is submitted for extraction as its download completes
  (`as_completed`), on a `ThreadPoolExecutor(max_workers=--extract-concurrency)` (TheRock's default
  `None`: Python's `min(32, cpu + 4)`);
- bootstrap: each manifest relpath is removed once under a lock and gets an empty
  `{relpath}.prebuilt` marker; members are streamed with `tarfile` over `pyzstd.ZstdFile` (xz:
  tarfile's own `r:xz`), each file written with one `read()` and its execute bits added with
  `fchmod`; the download cache is deleted afterwards.

Subcommands:
  upload  --endpoint URL --bucket B --prefix P DIR [--list FILE]   put archives + sidecars
  fetch   (--endpoint URL --bucket B | --local-staging-dir D) --prefix P (--names FILE | --keys FILE)
          --output-dir OUT
Prints one JSON line with timings and byte counts.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath

import boto3
from botocore.config import Config

ARCHIVE_SUFFIXES = (".tar.zst", ".tar.xz")


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(max_pool_connections=100, s3={"addressing_style": "path"}),
    )


def cmd_upload(args):
    s3 = client(args.endpoint)
    try:
        s3.create_bucket(Bucket=args.bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.BucketAlreadyExists:
        pass
    src = Path(args.dir)
    if args.list:
        names = [l.strip() for l in Path(args.list).read_text().splitlines() if l.strip()]
    else:
        names = sorted(p.name for p in src.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES))
    files = []
    for n in names:
        files.append(n)
        if (src / (n + ".sha256sum")).exists():
            files.append(n + ".sha256sum")
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        futs = [
            pool.submit(s3.upload_file, str(src / f), args.bucket, f"{args.prefix}/{f}")
            for f in files
        ]
        for f in futs:
            f.result()
    print(json.dumps({"uploaded": len(files), "seconds": time.monotonic() - start}))


def list_archives(s3, bucket, prefix):
    """TheRock's `S3Backend.list_artifacts`: Prefix without a slash, no delimiter, basenames."""
    keys = {}
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if name.endswith(ARCHIVE_SUFFIXES):
                keys[name] = (obj["Key"], obj["Size"])
    return keys


class _ZstdPipe:
    """`zstd -dc PATH` as a stream, for machines without pyzstd (offline): same tarfile reader."""

    def __init__(self, path):
        import subprocess

        self.proc = subprocess.Popen(["zstd", "-dcq", str(path)], stdout=subprocess.PIPE)
        self.read = self.proc.stdout.read

    def close(self):
        self.proc.stdout.close()
        if self.proc.wait() != 0:
            raise IOError(f"zstd -dc exited {self.proc.returncode}")


def open_archive(path):
    if path.name.endswith(".tar.zst"):
        try:
            import pyzstd

        except ImportError:
            # A pipe cannot seek: tarfile's stream mode reads it the same way, member by member.
            zf = _ZstdPipe(path)
            return zf, tarfile.open(fileobj=zf, mode="r|")
        zf = pyzstd.ZstdFile(str(path))
        return zf, tarfile.TarFile(fileobj=zf, mode="r")
    return None, tarfile.open(str(path), mode="r:xz")


class Bootstrap:
    """Once-per-relpath clean + `.prebuilt` marker under a lock (PR #2288), then member writes."""

    def __init__(self, out):
        self.out = out
        self.lock = threading.Lock()
        self.cleaned = set()
        self.files = 0

    def first_sight(self, relpath):
        with self.lock:
            if relpath in self.cleaned:
                return
            self.cleaned.add(relpath)
            stage_dir = self.out / relpath
            if stage_dir.exists():
                shutil.rmtree(stage_dir)
            marker = self.out / (relpath + ".prebuilt")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def extract(self, path):
        zf, tf = open_archive(path)
        written = 0
        try:
            first = tf.next()
            if first is None or first.name != "artifact_manifest.txt":
                raise IOError(f"{path}: artifact_manifest.txt is not the first member")
            relpaths = [l for l in tf.extractfile(first).read().decode().splitlines() if l]
            for r in relpaths:
                self.first_sight(r)
            while (m := tf.next()) is not None:
                for r in relpaths:
                    if not m.name.startswith(r + "/"):
                        continue
                    dest = self.out / r / PurePosixPath(m.name[len(r) + 1 :])
                    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                        os.unlink(dest)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if m.isfile():
                        with tf.extractfile(m) as src, open(dest, "wb") as dst:
                            data = src.read()
                            dst.write(data)
                            written += len(data)
                            with self.lock:
                                self.files += 1
                            st = os.fstat(dst.fileno())
                            os.fchmod(dst.fileno(), st.st_mode | (m.mode & 0o111))
                    elif m.isdir():
                        dest.mkdir(parents=True, exist_ok=True)
                    elif m.issym():
                        dest.symlink_to(m.linkname)
                    elif m.islnk():
                        os.link(self.out / PurePosixPath(m.linkname), dest)
                    else:
                        raise IOError(f"{path}: unhandled member {m.name}")
                    break
                else:
                    raise IOError(f"{path}: member {m.name} is not under the manifest")
        finally:
            tf.close()
            if zf is not None:
                zf.close()
        return written


def list_staged(staging, prefix):
    """TheRock's `LocalDirectoryBackend.list_artifacts`: archive names in `{staging}/{prefix}/`."""
    base = Path(staging) / prefix
    return {
        p.name: (str(p), p.stat().st_size)
        for p in base.iterdir()
        if p.name.endswith(ARCHIVE_SUFFIXES)
    }


def cmd_fetch(args):
    wanted = []
    if args.names:
        wanted = [l.strip() for l in Path(args.names).read_text().splitlines() if l.strip()]
    out = Path(args.output_dir)
    cache = out / ".download_cache"
    cache.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    if args.local_staging_dir:
        s3 = None
        listed = list_staged(args.local_staging_dir, args.prefix)
    elif args.keys:
        s3 = client(args.endpoint)
        # Full keys (`{prefix}/{archive}`), one per line: a commit's artifact set spread over the
        # runs that built it, as one CI run holding every package would list it.
        listed = {}
        for key in Path(args.keys).read_text().split():
            head = s3.head_object(Bucket=args.bucket, Key=key)
            listed[key.rsplit("/", 1)[-1]] = (key, head["ContentLength"])
        wanted = list(listed)
    else:
        s3 = client(args.endpoint)
        listed = list_archives(s3, args.bucket, args.prefix)
    # Dedupe per artifact stem, preferring .tar.zst (as artifact_manager does).
    chosen = {}
    for name in wanted:
        stem = name.split(".", 1)[0]
        if name not in listed:
            continue
        if stem not in chosen or name.endswith(".tar.zst"):
            chosen[stem] = name
    missing = [n for n in wanted if n not in listed]
    if missing:
        print(f"error: {len(missing)} archives not in the bucket, e.g. {missing[0]}", file=sys.stderr)
        return 1

    def download(name):
        key, size = listed[name]
        dest = cache / name
        if s3 is None:
            shutil.copy2(key, dest)
            sidecar = Path(key + ".sha256sum")
            if sidecar.exists():
                shutil.copy2(sidecar, cache / (name + ".sha256sum"))
        else:
            s3.download_file(args.bucket, key, str(dest))
        return dest, size

    boot = Bootstrap(out)
    downloaded = 0
    written = 0
    t_download = 0.0
    # TheRock's pipeline: extraction of an archive is submitted as soon as its download completes.
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.download_concurrency) as dl_pool:
        dl_futures = [dl_pool.submit(download, n) for n in chosen.values()]
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.extract_concurrency) as ex_pool:
            ex_futures = []
            for f in concurrent.futures.as_completed(dl_futures):
                path, size = f.result()
                downloaded += size
                ex_futures.append(ex_pool.submit(boot.extract, path))
            t_download = time.monotonic() - start
            for f in concurrent.futures.as_completed(ex_futures):
                written += f.result()
    shutil.rmtree(cache)
    total = time.monotonic() - start
    print(
        json.dumps(
            {
                "archives": len(chosen),
                "downloaded_bytes": downloaded,
                "written_bytes": written,
                "files": boot.files,
                "download_seconds": round(t_download, 3),
                "seconds": round(total, 3),
            }
        )
    )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("upload", "fetch"):
        s = sub.add_parser(name)
        s.add_argument("--endpoint", required=name == "upload")
        s.add_argument("--bucket", required=name == "upload")
        s.add_argument("--prefix", required=True, help="run prefix, e.g. 123-linux")
    up = sub.choices["upload"]
    up.add_argument("dir")
    up.add_argument("--list", help="file of archive names to upload (default: all in DIR)")
    fe = sub.choices["fetch"]
    fe.add_argument("--names", help="file of archive names under --prefix, one per line")
    fe.add_argument("--keys", help="file of full object keys instead (--prefix is then unused)")
    fe.add_argument("--output-dir", required=True)
    fe.add_argument("--download-concurrency", type=int, default=10)
    fe.add_argument("--extract-concurrency", type=int, default=None)
    fe.add_argument(
        "--local-staging-dir",
        help="fetch from {DIR}/{prefix}/ instead of S3 (THEROCK_LOCAL_STAGING_DIR)",
    )
    args = p.parse_args()
    if args.cmd == "fetch" and not args.local_staging_dir and not (args.endpoint and args.bucket):
        p.error("fetch needs --endpoint and --bucket, or --local-staging-dir")
    return cmd_upload(args) if args.cmd == "upload" else cmd_fetch(args)


if __name__ == "__main__":
    sys.exit(main() or 0)
