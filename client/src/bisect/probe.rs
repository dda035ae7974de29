//! One probe's pieces: the request for a candidate's artifacts, the missing ones (and `--nearest`
//! substitutes from ancestors), and the user's command with its exit status read the way `git
//! bisect run` reads it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use cairn_fingerprint::Blake3;

use crate::api::{Policy, Request, Resolved, Status};

use super::algorithm::Verdict;
use super::report::MissingArtifact;

/// What the command's exit status means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandVerdict {
    /// 0 good, 1–124/126/127 bad, 125 skip.
    Verdict(Verdict),
    /// Any other status (≥ 128, or a signal) stops the bisect; the text says which.
    Abort(String),
}

/// `git bisect run`'s reading of an exit status: 0 good, 125 skip, 1–127 otherwise bad, anything
/// else (128 and above, a death by signal) aborts.
pub fn classify(status: std::process::ExitStatus) -> CommandVerdict {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(0) => CommandVerdict::Verdict(Verdict::Good),
        Some(125) => CommandVerdict::Verdict(Verdict::Skip),
        Some(c) if (1..=127).contains(&c) => CommandVerdict::Verdict(Verdict::Bad),
        Some(c) => CommandVerdict::Abort(format!("the command exited {c} (≥ 128 aborts)")),
        None => CommandVerdict::Abort(format!(
            "the command was killed by signal {}",
            status.signal().unwrap_or(0)
        )),
    }
}

/// Where the command's standard output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutput {
    /// Cairn's own stdout (human output).
    Inherit,
    /// Cairn's stderr (with `--json`, stdout holds only the report).
    Stderr,
}

/// The user's command and what it is told.
#[derive(Debug, Clone)]
pub struct TestCommand {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Where its stdout goes.
    pub output: CommandOutput,
}

impl TestCommand {
    /// Run it for `commit` with `CAIRN_BISECT_COMMIT`, `CAIRN_BUILD_DIR` and `CAIRN_FAMILY` set,
    /// in the current directory, and wait.
    pub fn run(
        &self,
        commit: &str,
        build_dir: &Path,
        family: &str,
    ) -> std::io::Result<std::process::ExitStatus> {
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command to run"))?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env("CAIRN_BISECT_COMMIT", commit)
            .env("CAIRN_BUILD_DIR", build_dir)
            .env("CAIRN_FAMILY", family)
            .stdin(Stdio::null());
        if self.output == CommandOutput::Stderr {
            use std::os::fd::AsFd;
            let err = std::io::stderr().as_fd().try_clone_to_owned()?;
            cmd.stdout(Stdio::from(err));
        }
        cmd.status()
    }
}

/// The resolve/fetch request of one candidate.
pub fn request(
    stage: &str,
    family: &str,
    platform: &str,
    fingerprints: &BTreeMap<String, Blake3>,
    exclude_components: &[String],
) -> Request {
    Request {
        stage: stage.to_string(),
        family: family.to_string(),
        platform: platform.to_string(),
        artifacts: fingerprints
            .iter()
            .map(|(n, fp)| (n.clone(), Some(*fp)))
            .collect(),
        exclude_components: exclude_components.to_vec(),
        policy: Policy::default(),
    }
}

/// The artifacts a resolve answered missing, once each.
pub fn missing(resolved: &[Resolved]) -> Vec<MissingArtifact> {
    let mut out: Vec<MissingArtifact> = Vec::new();
    for r in resolved.iter().filter(|r| r.status == Status::Missing) {
        let artifact = if r.name.is_empty() {
            r.artifact.clone()
        } else {
            r.name.clone()
        };
        if out.iter().any(|m| m.artifact == artifact) {
            continue;
        }
        out.push(MissingArtifact {
            artifact,
            fingerprint: r.fingerprint.clone(),
            reason: r
                .explanation
                .first()
                .cloned()
                .unwrap_or_else(|| "no producer".into()),
            changed_inputs: Vec::new(),
        });
    }
    out
}

/// Absolute form of the build dir, created if needed.
pub fn prepare_build_dir(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::path::absolute(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_statuses_read_as_git_bisect_run_reads_them() {
        let v = |s| classify(s);
        assert_eq!(v(exited(0)), CommandVerdict::Verdict(Verdict::Good));
        assert_eq!(v(exited(125)), CommandVerdict::Verdict(Verdict::Skip));
        for bad in [1, 2, 100, 124, 126, 127] {
            assert_eq!(
                v(exited(bad)),
                CommandVerdict::Verdict(Verdict::Bad),
                "{bad}"
            );
        }
        for abort in [128, 130, 255] {
            assert!(
                matches!(v(exited(abort)), CommandVerdict::Abort(_)),
                "{abort}"
            );
        }
        // Killed by SIGKILL (no exit code).
        assert!(matches!(
            v(ExitStatus::from_raw(9)),
            CommandVerdict::Abort(m) if m.contains("signal 9")
        ));
    }
}
