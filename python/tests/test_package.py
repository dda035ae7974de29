"""The `cairn` package against the `cairn` CLI and a real `cairnd`: every answer must be the CLI's.

- fingerprints and explanations equal `cairn fingerprint --json` for every artifact of TheRock's
  real topology, on a generated checkout, for generic and per-arch families;
- `Topology` answers as `cairn topology`, `RunOutputRoot` as `cairn layout`;
- bootstrap and fetch write trees identical to the CLI's, and return the CLI's documents;
- find answers from Cairn's records, and from GitHub's runs (the testkit's mock), as `cairn find`;
- errors are the documented exceptions with the CLI's messages;
- `python -m cairn` takes TheRock's flags; docs/python.md's example runs as written; the installed
  package passes `mypy --strict`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from conftest import FAMILY, REPO, RUN_GENERIC, RUN_MATH, World


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (Cairn's own `.cairn-*` bookkeeping left out): kind, mode, content."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".cairn")]
        for name in dirnames + filenames:
            if name.startswith(".cairn"):
                continue
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


# -- offline: fingerprints, topology, layout -----------------------------------------------------


@pytest.mark.parametrize("family", ["generic", FAMILY, "gfx110X-all"])
def test_fingerprints_equal_the_clis_for_every_artifact(world: World, family: str) -> None:
    ours = cairn.fingerprints(world.checkout, family)
    theirs = world.cli_json("fingerprint", "--checkout", str(world.checkout), "--family", family)
    assert ours == theirs
    assert set(ours) == set(cairn.Topology(world.checkout / "BUILD_TOPOLOGY.toml").artifacts)
    assert len(ours) == 73, "TheRock's real topology has 73 artifacts"


def test_stage_fingerprints_and_explain_equal_the_clis(world: World) -> None:
    c = str(world.checkout)
    ours = cairn.fingerprints(c, FAMILY, "math-libs", platform="linux")
    theirs = world.cli_json("fingerprint", "--checkout", c, "--family", FAMILY,
                            "--stage", "math-libs", "--platform", "linux")  # fmt: skip
    assert ours == theirs
    e = cairn.explain(c, "blas", FAMILY, platform="linux")
    cli = world.cli_json("fingerprint", "explain", "--checkout", c, "--artifact", "blas",
                         "--family", FAMILY, "--platform", "linux")  # fmt: skip
    assert e.fingerprint == cli["fingerprint"] == ours["blas"]
    assert [(i.kind, i.name, i.value) for i in e.inputs] == [
        (i["kind"], i["name"], i["value"]) for i in cli["inputs"]
    ]


def test_topology_answers_as_the_cli(world: World) -> None:
    t = cairn.Topology(REPO / "BUILD_TOPOLOGY.toml")
    assert t.validate() == []
    assert len(t.stages) == 11
    for stage in t.stages:
        cli = world.cli_json("--topology", str(REPO / "BUILD_TOPOLOGY.toml"), "topology",
                             "inbound", "--stage", stage)  # fmt: skip
        assert t.inbound(stage) == sorted(cli), stage
    assert t.inbound("wsl-rocdxg") == [
        "amd-llvm", "base", "core-hip", "core-kpack", "core-runtime", "sysdeps",
    ]  # fmt: skip
    assert len(t.produced("math-libs")) == 20
    with pytest.raises(cairn.CairnError, match="nope"):
        t.inbound("nope")


def test_an_invalid_topology_names_every_problem(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "BUILD_TOPOLOGY.toml"
    bad.write_text(
        '[build_stages.s]\nartifact_groups = ["g", "missing-group"]\n'
        '[artifact_groups.g]\n[artifacts.a]\nartifact_group = "g"\nartifact_deps = ["ghost"]\n'
    )
    problems = cairn.Topology(bad).validate()
    assert len(problems) == 2, problems
    cli = world.cli("--topology", str(bad), "topology", "validate", check=False)
    assert cli.returncode == 1
    for p in problems:
        assert p in cli.stderr
    with pytest.raises(cairn.InvalidTopology) as e:
        cairn.fingerprints(world.checkout, FAMILY, topology=bad)
    assert e.value.problems == problems
    with pytest.raises(cairn.InvalidTopology):
        cairn.Topology(bad).check()


@pytest.mark.parametrize(
    "repo,head",
    [("ROCm/TheRock", None), ("ROCm/TheRock", "someone/TheRock"), ("ROCm/rocm-libraries", None)],
)
def test_run_output_root_equals_cairn_layout(world: World, repo: str, head: str | None) -> None:
    root = cairn.RunOutputRoot.from_workflow_run(
        "12345", "linux", repo, None if head is None else {"head_repository": {"full_name": head}}
    )
    args = ["layout", "--run-id", "12345", "--platform", "linux", "--repo", repo]
    if head:
        args += ["--head-repo", head]
    cli = world.cli_json(*args)
    assert (root.bucket, root.external_repo, root.prefix, root.trusted) == (
        cli["bucket"], cli["external_repo"], cli["prefix"], cli["trusted"],
    )  # fmt: skip
    assert root.s3_uri == cli["s3_uri"]
    assert root.https_url == cli["https_url"]
    assert root.artifact_index().relative_path == cli["index_key"]
    assert root.artifact("blas_lib_gfx94X-dcgpu.tar.zst").s3_uri == (
        f"{cli['s3_uri']}/blas_lib_gfx94X-dcgpu.tar.zst"
    )
    with pytest.raises(cairn.CairnError, match="not-a-repo"):
        cairn.RunOutputRoot.from_workflow_run("12345", "linux", "not-a-repo")


# -- online: a real cairnd -----------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["world", "s3_world"])
def test_bootstrap_writes_the_clis_tree_and_document(
    storage: str, request: pytest.FixtureRequest
) -> None:
    world: World = request.getfixturevalue(storage)
    c = str(world.checkout)
    cli_dir, py_dir = world.work / "bootstrap-cli", world.work / "bootstrap-py"
    cli = world.cli_json("bootstrap", "--checkout", c, "--stage", "math-libs", "--family", FAMILY,
                         "--build-dir", str(cli_dir), "--platform", "linux", "--quiet")  # fmt: skip
    r = cairn.Client(world.daemon).bootstrap("math-libs", FAMILY, py_dir, checkout=c, platform="linux")
    assert isinstance(r, cairn.FetchResult)
    assert tree(py_dir) == tree(cli_dir)
    assert any(p.endswith(".prebuilt") for p in tree(py_dir))
    assert r.summary.artifacts == cli["summary"]["artifacts"] > 0
    assert r.missing == [] and cli["missing"] == []
    assert r.fingerprints == cli["fingerprints"]
    assert [t.artifact for t in r.trees] == [t["artifact"] for t in cli["trees"]]
    assert [x.artifact for x in r.resolved] == [x["artifact"] for x in cli["resolved"]]
    assert {x.producer.run_id for x in r.resolved if x.producer} == {RUN_GENERIC}
    assert set(vars(r)) == set(cli), "the dataclass has exactly the fields of `cairn --json`"
    assert set(vars(r.summary)) == set(cli["summary"])
    # Again into the same build dir: incremental, nothing rewritten.
    again = cairn.Client(world.daemon).bootstrap("math-libs", FAMILY, py_dir, checkout=c, platform="linux")
    assert again.summary.files_written == 0 and again.summary.files_unchanged == r.summary.files


def test_fetch_and_resolve_equal_the_clis(world: World) -> None:
    c = str(world.checkout)
    client = cairn.Client(world.daemon)
    cli_dir, py_dir = world.work / "fetch-cli", world.work / "fetch-py"
    cli = world.cli_json("fetch", "--checkout", c, "--stage", "math-libs", "--family", FAMILY,
                         "--output-dir", str(cli_dir), "--platform", "linux",
                         "--exclude-components", "dbg", "--quiet")  # fmt: skip
    r = client.fetch(FAMILY, py_dir, stage="math-libs", checkout=c, platform="linux",
                     exclude_components="dbg")  # fmt: skip
    assert tree(py_dir) == tree(cli_dir)
    assert all(not t.artifact.split("_")[1] == "dbg" for t in r.trees)
    assert r.layout == cli["layout"] == "plain"
    res = client.resolve("math-libs", [FAMILY], checkout=c, platform="linux")
    cli_res = world.cli_json("resolve", "--checkout", c, "--stage", "math-libs",
                             "--family", FAMILY, "--platform", "linux", "--quiet")  # fmt: skip
    assert without(vars(res) | {"resolved": None, "missing": None}, "elapsed_ms") == without(
        cli_res | {"resolved": None, "missing": None}, "elapsed_ms"
    )
    assert [x.artifact for x in res.resolved] == [x["artifact"] for x in cli_res["resolved"]]
    assert res.runs == [RUN_GENERIC]


def test_a_run_id_fetch_needs_no_checkout_as_the_cli(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TheRock's `fetch --run-id X` runs anywhere: outside a checkout the package, like the CLI,
    asks for run X's artifact set by name instead of failing to fingerprint."""
    monkeypatch.chdir(tmp_path)  # not inside any git work tree
    topology = str(REPO / "BUILD_TOPOLOGY.toml")
    cli_dir, py_dir = tmp_path / "fetch-cli", tmp_path / "fetch-py"
    cli = world.cli_json("--topology", topology, "fetch", "--run-id", RUN_MATH, "--family", FAMILY,
                         "--output-dir", str(cli_dir), "--platform", "linux", "--quiet",
                         check=False)  # fmt: skip
    r = cairn.Client(world.daemon).fetch(FAMILY, py_dir, run_id=RUN_MATH, topology=topology,
                                         platform="linux", allow_missing=True)  # fmt: skip
    assert r.trees, "run 1002's own artifacts are found by name"
    assert {t.artifact for t in r.trees} == {t["artifact"] for t in cli["trees"]}
    assert tree(py_dir) == tree(cli_dir)
    with pytest.raises(cairn.CairnError, match="checkout"):
        cairn.Client(world.daemon).fetch(FAMILY, tmp_path / "no-run", topology=topology,
                                         platform="linux")  # fmt: skip


def test_missing_artifacts_carry_the_list_after_materializing_the_rest(world: World) -> None:
    c = str(world.checkout)
    # Windows fingerprints differ from the published Linux ones: everything is missing.
    cli = world.cli_json("bootstrap", "--checkout", c, "--stage", "math-libs", "--family", FAMILY,
                         "--build-dir", str(world.work / "missing-cli"), "--platform", "windows",
                         "--quiet", check=False)  # fmt: skip
    with pytest.raises(cairn.MissingArtifacts) as e:
        cairn.Client(world.daemon).bootstrap(
            "math-libs", FAMILY, world.work / "missing-py", checkout=c, platform="windows"
        )
    assert isinstance(e.value, cairn.CairnError)
    assert sorted(e.value.artifacts) == sorted(m["artifact"] for m in cli["missing"])
    assert len(e.value.missing) > 0 and e.value.missing[0].explanation
    assert e.value.result is not None and e.value.result.summary.missing == len(e.value.missing)
    r = cairn.Client(world.daemon).bootstrap(
        "math-libs", FAMILY, world.work / "missing-py", checkout=c, platform="windows",
        allow_missing=True,
    )  # fmt: skip
    assert len(r.missing) == len(e.value.missing)


def test_an_unreachable_daemon_is_daemon_unavailable_with_the_clis_hint(world: World) -> None:
    nowhere = f"unix:{world.work / 'nobody.sock'}"
    with pytest.raises(cairn.DaemonUnavailable) as e:
        cairn.Client(nowhere).status()
    cli = subprocess.run([str(world.bins / "cairn"), "--daemon", nowhere, "status"],
                         capture_output=True, text=True)  # fmt: skip
    assert cli.returncode == 2
    first = str(e.value).splitlines()[0]
    assert f"cairn: error: {first}" in cli.stderr
    assert "cairnd serve" in first


def test_push_import_status_and_gc(world: World) -> None:
    c = str(world.checkout)
    client = cairn.Client(world.daemon)
    out = world.work / "build-py-push"
    world.data("build-dir", "--checkout", c, "--stage", "math-libs", "--family", "gfx110X-all",
               "--out", str(out), "--bytes", "4096")  # fmt: skip
    p = client.push("math-libs", "gfx110X-all", out, "1003", checkout=c, platform="linux",
                    workflow="multi_arch_ci.yml")  # fmt: skip
    assert isinstance(p, cairn.Published) and p.trusted
    assert p.prefix == "1003-linux" and p.archives
    assert {a.artifact.rsplit("_", 1)[1] for a in p.archives} <= {"generic", "gfx110X-all"}
    res = client.resolve("math-libs", "gfx110X-all", checkout=c, platform="linux",
                         exclude_artifacts=[])  # fmt: skip
    assert res.missing == []
    imported = client.import_run("1003", platform="linux")
    assert imported.prefix == "1003-linux" and len(imported.archives) >= len(p.archives)
    stats = client.status()
    cli = world.cli_json("status")
    assert set(vars(stats)) == set(cli)
    assert stats.daemon == cli["daemon"] and stats.blobs > 0
    g = client.gc("100G")
    assert set(vars(g)) == set(world.cli_json("gc", "--max-bytes", "100G"))
    assert g.evicted_blobs == 0 and g.store_bytes == stats.store_bytes
    with pytest.raises(cairn.CairnError, match="nope"):
        client.gc("nope")


def test_find_answers_from_cairns_records_as_cairn_find(world: World) -> None:
    head = subprocess.run(["git", "-C", str(world.checkout), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    info = cairn.find_artifacts_for_commit(
        head, "ROCm/TheRock", FAMILY, platform="linux", daemon=world.daemon, offline=True,
        checkout=world.checkout,
    )  # fmt: skip
    cli = world.cli_json("find", "--commit", head, "--repo", "ROCm/TheRock", "--family", FAMILY,
                         "--platform", "linux", "--offline", "--checkout", str(world.checkout))  # fmt: skip
    assert info is not None and cli["status"] == "found"
    r = cli["results"][0]
    assert info.workflow_run_id == r["run_id"] == RUN_MATH
    assert info.git_commit_sha == head and info.amdgpu_family == FAMILY
    assert info.s3_bucket == r["bucket"] and info.external_repo == r["external_repo"]
    assert info.s3_uri == r["s3_uri"] and info.s3_index_url == r["index_url"]
    assert info.s3_path == f"{r['s3_path']}/" and info.source == "cairn"
    assert info.workflow_file_name == "multi_arch_ci.yml"
    # A commit nobody built: None, as TheRock's function returns nothing.
    assert cairn.find_artifacts_for_commit(
        "0" * 40, "ROCm/TheRock", FAMILY, platform="linux", daemon=world.daemon, offline=True,
        checkout=world.checkout,
    ) is None  # fmt: skip


def test_python_m_cairn_takes_therocks_flags(world: World) -> None:
    env = {**os.environ, "CAIRN_SOCKET": world.daemon}
    c = str(world.checkout)
    run = lambda *a: subprocess.run([sys.executable, "-m", "cairn", *a], capture_output=True,  # noqa: E731
                                    text=True, env=env)  # fmt: skip
    out = world.work / "pym-bootstrap"
    p = run("fetch", "--stage", "math-libs", "--amdgpu-families", FAMILY, "--output-dir", str(out),
            "--bootstrap", "--checkout", c, "--platform", "linux")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert tree(out) == tree(world.work / "bootstrap-cli") or any(tree(out))
    head = subprocess.run(["git", "-C", c, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    p = run("find_artifacts_for_commit", "--commit", head, "--artifact-group", FAMILY,
            "--platform", "linux", "--offline", "--checkout", c)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert f"Workflow run ID:     {RUN_MATH}" in p.stdout
    p = run("fetch", "--stage", "math-libs", "--amdgpu-families", FAMILY, "--output-dir",
            str(world.work / "pym-missing"), "--checkout", c, "--platform", "windows")  # fmt: skip
    assert p.returncode == 1 and "no acceptable producer" in p.stderr
    p = run("fingerprint", "--checkout", c, "--family", FAMILY, "--stage", "math-libs")
    assert p.returncode == 0 and json.loads(p.stdout) == cairn.fingerprints(c, FAMILY, "math-libs")


def test_the_package_is_typed_and_self_contained() -> None:
    pkg = Path(cairn.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_native.pyi").exists()
    assert cairn.__version__
    # No `cairn` binary is needed: the package never looks one up.
    src = "".join(p.read_text() for p in pkg.glob("*.py"))
    assert "subprocess" not in src and "shutil.which" not in src


def test_find_falls_back_to_github_for_runs_published_without_cairn(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain TheRock run 2001: run 1002's archives under its own prefix, without Cairn's records.
    [src] = [d for d in (world.work / "bucket").glob("**/1002-linux") if any(d.glob("*.tar.zst"))]
    dst = src.parent / "2001-linux"
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    sha = "ab" * 20
    mock = subprocess.Popen(
        [str(world.bins / "cairn-demo-data"), "github-mock",
         "--run", f"ROCm/TheRock:multi_arch_ci.yml:2001:{sha}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert mock.stdout is not None
        url = mock.stdout.readline().strip()
        monkeypatch.setenv("CAIRN_GITHUB_API", url)
        monkeypatch.setenv("GITHUB_TOKEN", "")
        info = cairn.find_artifacts_for_commit(
            sha, "ROCm/TheRock", FAMILY, platform="linux", daemon=world.daemon,
            checkout=world.checkout,
        )  # fmt: skip
        cli = world.cli_json("find", "--commit", sha, "--repo", "ROCm/TheRock", "--family", FAMILY,
                             "--platform", "linux", "--checkout", str(world.checkout),
                             env={"CAIRN_GITHUB_API": url, "GITHUB_TOKEN": ""})  # fmt: skip
    finally:
        mock.stdin.close()  # type: ignore[union-attr]
        mock.wait(timeout=10)
    assert info is not None and cli["status"] == "found"
    r = cli["results"][0]
    assert info.source == r["source"] == "github"
    assert info.workflow_run_id == r["run_id"] == "2001"
    assert (info.workflow_run_status, info.workflow_run_conclusion) == ("completed", "success")
    assert info.workflow_run_html_url == r["run_url"] and info.workflow_run_html_url
    assert info.s3_uri == r["s3_uri"] and info.s3_index_url == r["index_url"]
    assert sorted(info.artifacts) == sorted(r["artifacts"]) and info.artifacts


def test_the_installed_package_type_checks_strictly(tmp_path: Path) -> None:
    """The signatures type checkers see (`py.typed`, `_native.pyi`) agree with the code."""
    pytest.importorskip("mypy")
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path),
                        "-p", "cairn"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_composition_example_of_docs_python_md_runs(world: World) -> None:
    """docs/python.md's example (find, then bootstrap), run as written from the checkout."""
    text = (REPO / "docs" / "python.md").read_text()
    example = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 10
    head = subprocess.run(["git", "-C", str(world.checkout), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    env = {
        **os.environ,
        "CAIRN_SOCKET": world.daemon,
        # Cairn's records answer; GitHub must not be needed (an unroutable API fails loudly).
        "CAIRN_GITHUB_API": "http://127.0.0.1:9",
        "GITHUB_TOKEN": "",
    }
    build = world.checkout / "build"
    try:
        p = subprocess.run([sys.executable, "-c", f"commit = {head!r}\n{example}"],
                           cwd=world.checkout, env=env, capture_output=True, text=True)  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert f"using run {RUN_MATH}" in p.stdout
        assert tree(build) == tree(world.work / "bootstrap-cli")
    finally:
        import shutil  # noqa: PLC0415

        shutil.rmtree(build, ignore_errors=True)


def test_keyboard_interrupt_stops_a_bootstrap_at_a_consistent_point(world: World) -> None:
    """SIGINT during `bootstrap()` raises KeyboardInterrupt once the materializer has stopped as
    `cairn` stops on SIGINT: every `.prebuilt` marker left covers a complete stage dir, and the
    next bootstrap finishes the tree."""
    dest = world.work / "interrupted"
    script = f"""
import os, signal, sys, threading, time
import cairn
threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGINT)).start()
r = None
try:
    r = cairn.Client({world.daemon!r}).bootstrap(
        "math-libs", {FAMILY!r}, {str(dest)!r}, checkout={str(world.checkout)!r}, platform="linux")
    time.sleep(2)  # a late signal lands here
except KeyboardInterrupt:
    print("completed" if r is not None else "interrupted")
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() in ("interrupted", "completed"), p.stdout + p.stderr
    expected = tree(world.work / "bootstrap-cli")
    got = tree(dest) if dest.exists() else {}
    for marker in (k for k in got if k.endswith(".prebuilt")):
        stage_dir = marker[: -len(".prebuilt")]
        sub = lambda t: {k: v for k, v in t.items() if k.startswith(stage_dir + "/")}  # noqa: E731
        assert sub(got) == sub(expected), f"{marker} marks an incomplete stage dir"
    cairn.Client(world.daemon).bootstrap("math-libs", FAMILY, dest, checkout=world.checkout,
                                         platform="linux")  # fmt: skip
    assert tree(dest) == expected
