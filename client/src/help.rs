//! Man-page-quality help: the examples, environment and exit-status sections that `--help` prints
//! after the options (`-h` stays short). They are attached to the clap definition here, by
//! subcommand name, so `cli.rs` stays about arguments; [`command`] is what `main` parses with and what
//! `cairn completions` generates scripts from.

use clap::CommandFactory;

use crate::cli::Cli;

/// The full `cairn` command: the derived definition plus the long help of every subcommand.
pub fn command() -> clap::Command {
    Cli::command()
        .after_long_help(TOP)
        .mut_subcommands(|sub| match examples(sub.get_name()) {
            // `cairn bisect run --help` shows the bisect examples too.
            Some(text) if sub.get_name() == "bisect" => sub
                .after_long_help(text)
                .mut_subcommand("run", |run| run.after_long_help(text)),
            Some(text) => sub.after_long_help(text),
            None => sub,
        })
}

const TOP: &str = "\
Examples:
  Fill a build dir with what the math-libs stage needs, from whichever runs built it:
    cairn bootstrap --stage math-libs --family gfx94X-dcgpu --build-dir build

  Publish what the stage built, as CI run 123456:
    cairn push --stage math-libs --family gfx94X-dcgpu --build-dir build --run-id 123456

  Show the daemon's cache:
    cairn status

Environment:
  CAIRN_SOCKET     where cairnd listens (as --daemon)
  XDG_RUNTIME_DIR  the default socket is $XDG_RUNTIME_DIR/cairn/cairnd.sock
                   (else /tmp/cairn-$UID/cairnd.sock)
  NO_COLOR         when set and not empty, no colour in any output; colour is also off when the
                   output is not a terminal

Exit status:
  0  success
  1  the command ran and the answer is \"no\": missing artifacts, an invalid topology, corrupt
     blobs found by verify
  2  error: bad arguments, unreadable input, unreachable daemon

Shell completions: cairn completions bash|zsh|fish (see cairn completions --help).
See docs/user-journeys.md for whole workflows.";

/// Examples for the subcommand `name`, if it has any.
fn examples(name: &str) -> Option<&'static str> {
    Some(match name {
        "topology" => {
            "\
Examples:
  cairn topology validate
  cairn topology inbound --stage math-libs
  cairn topology order
  cairn topology graph | dot -Tsvg > topology.svg"
        }
        "layout" => {
            "\
Examples:
  Where run 123456 of ROCm/TheRock put its artifacts (bucket, prefix, URLs):
    cairn layout --run-id 123456 --platform linux

  A run of another repository (TheRock's --run-github-repo is accepted too):
    cairn layout --run-id 123456 --repo ROCm/rocm-libraries

  A run from before the April 2026 bucket change:
    cairn layout --run-id 123456 --legacy-buckets --updated-at 2025-10-01T00:00:00Z"
        }
        "fingerprint" => {
            "\
Examples:
  Fingerprints of everything the math-libs stage fetches and builds, as JSON:
    cairn fingerprint --checkout . --family gfx94X-dcgpu --stage math-libs --json

  Why blas has the fingerprint it has (every input and its hash):
    cairn fingerprint explain --checkout . --artifact blas --family gfx94X-dcgpu"
        }
        "bootstrap" => {
            "\
Examples:
  Fetch the inbound artifacts of math-libs into build/ with `.prebuilt` markers, then configure:
    cairn bootstrap --stage math-libs --family gfx94X-dcgpu --build-dir build
    cmake -B build -GNinja -DTHEROCK_AMDGPU_FAMILIES=gfx94X-dcgpu

  Without debug symbols and tests, from a given run when no fingerprint matches:
    cairn bootstrap --stage math-libs --family gfx94X-dcgpu --build-dir build \\
        --exclude-components dbg,test --run-id 123456

Artifacts are matched by source fingerprint (computed from --checkout), so a bootstrap after a
submodule bump takes the unchanged artifacts from older runs and reports the changed ones missing
(exit 1)."
        }
        "fetch" => {
            "\
Examples:
  Extract every artifact math-libs needs to out/artifacts/{name}_{component}_{family}/:
    cairn fetch --stage math-libs --amdgpu-families \"gfx94X-dcgpu;gfx110X-all\" --output-dir out

  Everything of the topology, merged into one tree, libraries only:
    cairn fetch --family gfx1151 --output-dir dist --flatten --exclude-components dbg,dev,doc,test"
        }
        "resolve" => {
            "\
Examples:
  Which run each inbound artifact of math-libs would come from, and why (nothing downloaded):
    cairn resolve --stage math-libs --family gfx94X-dcgpu

  Every explanation line, or the whole answer as JSON:
    cairn -v resolve --stage math-libs --family gfx94X-dcgpu
    cairn resolve --stage math-libs --family gfx94X-dcgpu --json | jq '.missing[].artifact'

Exit 1 when an artifact has no acceptable producer (bootstrap would report it missing)."
        }
        "push" => {
            "\
Examples:
  In CI, after building the stage:
    cairn push --stage math-libs --family gfx94X-dcgpu --build-dir build \\
        --run-id \"$GITHUB_RUN_ID\" --workflow multi_arch_ci.yml

  A fork's pull request (published as untrusted; others only use it with --allow-untrusted):
    cairn push --stage compiler-runtime --family generic --build-dir build --run-id 123456 \\
        --head-repo someone/TheRock

The build dir must be readable by cairnd (same machine, or mounted at the same path)."
        }
        "copy" => {
            "\
Examples:
  A setup job taking the prebuilt stages of run 123456 over into this run (nothing is copied:
  this run's job manifests record the archives as reused, with the run that built each):
    cairn copy --source-run-id 123456 --run-id \"$GITHUB_RUN_ID\" \\
        --stage compiler-runtime,math-libs --amdgpu-families gfx94X-dcgpu

  What would be recorded:
    cairn copy --source-run-id 123456 --run-id 123999 --stage math-libs --family gfx94X-dcgpu \\
        --dry-run"
        }
        "import" => {
            "\
Examples:
  Make a run published by TheRock's own artifact_manager usable (lists it once):
    cairn import --run-id 123456

  And download every archive now, e.g. to warm a runner's cache overnight:
    cairn import --run-id 123456 --ingest"
        }
        "status" => {
            "\
Examples:
  cairn status
  cairn status --json | jq .store_bytes
  cairn --daemon unix:/run/cairn/cairnd.sock status"
        }
        "gc" => {
            "\
Examples:
  Evict least-recently-used blobs until the store is under 50 GiB:
    cairn gc --max-bytes 50G

  Down to the quota cairnd was configured with:
    cairn gc"
        }
        "verify" => {
            "\
Examples:
  Re-hash every blob of the running daemon's store (fetches keep being served):
    cairn verify

  A cheap scrub of 1000 random blobs, e.g. from cron; exit 1 when something was quarantined:
    cairn verify --sample 1000 --json | jq .corrupt"
        }
        "find" => {
            "\
Examples:
  Which CI run holds gfx94X-dcgpu artifacts for a commit:
    cairn find --commit 89553ce37 --family gfx94X-dcgpu

  The newest commit at or before HEAD with everything math-libs needs (a bisect or bootstrap base):
    cairn find --commit HEAD --stage math-libs --family gfx94X-dcgpu --fallback

  From Cairn's own records only, as JSON:
    cairn find --commit 89553ce37 --offline --json"
        }
        "diff" => {
            "\
Examples:
  What grew between two commits (their newest runs), per artifact and per file:
    cairn diff 1a2b3c4 5d6e7f8 --family gfx94X-dcgpu

  Two runs, every file, as JSON:
    cairn diff 123456 123789 --json"
        }
        "bisect" => {
            "\
Examples:
  Which rocm-libraries commit broke hipInfo on gfx1151, TheRock fixed at HEAD (no checkout, no
  build: each probe materializes CI's artifacts into build/, only what changed is rewritten):
    cairn bisect run --submodule rocm-libraries --good 1a2b3c4 --bad origin/develop \\
        --family gfx1151 --stage math-libs --build-dir build -- ./repro.sh

  TheRock's own history, two artifacts only, a missing artifact taken from the newest ancestor
  that has one (marked in the report), the report as JSON:
    cairn bisect run --good v7.13.0 --bad origin/main --family gfx94X-dcgpu \\
        --artifacts blas,core-hip --build-dir build --nearest --json -- ./check-blas.sh

  The report of the last bisect in a build dir (also written after every step), and continuing
  it after Ctrl-C (its verdicts are kept, the rest is probed):
    cairn bisect log --build-dir build
    cairn bisect run --resume ...the same arguments... -- ./repro.sh

The command runs in the current directory with CAIRN_BISECT_COMMIT, CAIRN_BUILD_DIR and
CAIRN_FAMILY set; exit 0 is good, 125 skip, 1-124/126/127 bad, anything else (>= 128, a signal)
aborts. A commit whose artifacts no run built is skipped, never substituted (unless --nearest).
Cairn bisects by itself: the work tree, index and HEAD are never touched, and Ctrl-C leaves the
build dir consistent. While the command runs, the artifacts of both possible next probes are
prefetched. Exit 0 when the first bad commit is found, 1 when skips leave a range, 2 on abort."
        }
        "prefetch" => {
            "\
Examples:
  Warm this host for a bisect of rocm-libraries (first-parent commits after A up to B):
    cairn prefetch --submodule rocm-libraries --commits 1a2b3c4..origin/develop \\
        --family gfx1151 --stage math-libs

  Every inbound artifact of math-libs for the last 20 TheRock commits:
    cairn prefetch --commits HEAD~20..HEAD --family gfx94X-dcgpu --stage math-libs

Nothing is materialized; artifacts no run built are listed and do not fail the command."
        }
        "pin" => {
            "\
Examples:
  Keep a week of math-libs artifacts on this host for the bisects of the week (prefetched first):
    cairn pin week-42 --commits HEAD~50..HEAD --family gfx94X-dcgpu --stage math-libs --ttl 7d

  See the pins and their expiry, then drop one:
    cairn status
    cairn unpin week-42

Pinned blobs are never evicted (quota or cairn gc) until unpinned or expired; pins survive daemon
restarts. cairn bisect pins what it fetches and prefetches for its session and unpins at the end."
        }
        "unpin" => {
            "\
Examples:
  cairn unpin week-42
  cairn status     # the remaining pins

Exit 1 when there is no such pin."
        }
        "completions" => {
            "\
Examples:
  bash (current shell; add to ~/.bashrc to keep):
    source <(cairn completions bash)
  bash (system-wide):
    cairn completions bash > /usr/share/bash-completion/completions/cairn
  zsh (a directory on $fpath):
    cairn completions zsh > ~/.zfunc/_cairn
  fish:
    cairn completions fish > ~/.config/fish/completions/cairn.fish"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_subcommand_has_examples() {
        let cmd = super::command();
        cmd.clone().debug_assert();
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            assert!(
                sub.get_after_long_help().is_some(),
                "`cairn {} --help` has no examples",
                sub.get_name()
            );
        }
    }
}
