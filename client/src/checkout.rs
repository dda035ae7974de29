//! Which checkout a command works on: the one rule for `--checkout`, used by every command that
//! reads a TheRock checkout (fingerprints, revisions, `origin`, history). git itself runs only in
//! [`cairn_fingerprint::git`].

use std::path::{Path, PathBuf};

use cairn_fingerprint::GitError;
use cairn_fingerprint::git;

/// Why no checkout could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// No `--checkout`, and the current directory is not inside a git work tree.
    #[error(
        "the current directory is not inside a git checkout; pass --checkout DIR (the TheRock \
         superproject fingerprints are computed from)"
    )]
    NotInCheckout,
    /// git could not be run at all.
    #[error("running `git rev-parse --show-toplevel` (is git installed?)")]
    Git(#[source] GitError),
}

/// The checkout a command works on.
///
/// - `--checkout DIR` wins, taken as given (a missing or non-git directory is reported by whatever
///   reads it, e.g. the fingerprinter, with the path in the message).
/// - Otherwise the top level of the git work tree around the current directory, so a command run
///   from a subdirectory of TheRock works on the whole superproject and its `BUILD_TOPOLOGY.toml`.
/// - Otherwise [`CheckoutError::NotInCheckout`], whose message names `--checkout`.
///
/// Callers for whom a checkout is optional decide what the error means for them. `cairn find` and
/// `cairn diff` need a checkout only to resolve a revision name, read `origin` and walk local
/// history; a full commit SHA or a run id needs none, and they are tested (and used in CI) from
/// directories that are not checkouts. They therefore fall back to the current directory on any
/// error here, as they always did; inside a work tree they now use its top level like every other
/// command.
pub fn checkout_dir(explicit: Option<&Path>) -> Result<PathBuf, CheckoutError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    match git::toplevel(Path::new(".")) {
        Ok(top) => Ok(top),
        Err(e @ GitError::Spawn(_)) => Err(CheckoutError::Git(e)),
        // Not a repository, or any other refusal (a bare repository, an unsafe owner): git's own
        // message is less helpful than naming `--checkout`.
        Err(_) => Err(CheckoutError::NotInCheckout),
    }
}

/// The checkout a fetch plan reads, when it has one: [`checkout_dir`], except that a plan for a
/// named run (`--run-id`) made outside any checkout has none and asks for that run's artifact set
/// by name ([`crate::plan::plan_in`]). Used by `cairn resolve|fetch|bootstrap` and the Python
/// package alike.
pub fn plan_checkout(
    explicit: Option<&Path>,
    run_id: Option<&str>,
) -> Result<Option<PathBuf>, CheckoutError> {
    match checkout_dir(explicit) {
        Ok(dir) => Ok(Some(dir)),
        Err(CheckoutError::NotInCheckout) if run_id.is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_checkout_wins_unchecked() {
        let dir = Path::new("/nonexistent/TheRock");
        assert_eq!(checkout_dir(Some(dir)).unwrap(), dir);
    }

    #[test]
    fn not_in_checkout_names_the_flag() {
        let msg = CheckoutError::NotInCheckout.to_string();
        assert!(msg.contains("pass --checkout DIR"), "{msg}");
    }
}
