//! Pins: named leases that outlive a request, persisted in the index and expiring on their own.
//!
//! A pin holds the blobs of a set of trees (archive contents) against eviction and `gc` until it
//! is removed or its expiry passes, across daemon restarts: the record `{trees, expires_at}` is an
//! index `meta` entry (`pin/{name}`), and opening the store leases the blobs of every unexpired
//! pin again. `cairn bisect` pins what its session fetched and prefetched so eviction cannot undo
//! the prefetch; `cairn pin` / `cairn unpin` do the same for CI warm-up.
//!
//! Expiry is enforced lazily, wherever it matters: before every eviction (`gc`, background steps)
//! and every listing (`Stats`), expired pins are dropped, their records removed and their leases
//! released.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use cairn_fingerprint::Blake3;
use serde::{Deserialize, Serialize};

use crate::store::evict::Lease;

/// The index `meta` key prefix of pin records.
pub const META_PREFIX: &str = "pin/";

/// A pin as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRecord {
    /// Tree digests whose blobs are held.
    pub trees: BTreeSet<Blake3>,
    /// Unix seconds after which the pin no longer holds anything.
    pub expires_at: u64,
}

/// A pin as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinInfo {
    /// Its name.
    pub name: String,
    /// Trees pinned.
    pub trees: u64,
    /// Distinct blobs held.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Unix seconds of its expiry.
    pub expires_at: u64,
}

/// A live pin: its record and the lease that holds its blobs.
pub(crate) struct Pinned {
    pub(crate) record: PinRecord,
    pub(crate) lease: Lease,
    pub(crate) bytes: u64,
}

impl Pinned {
    pub(crate) fn info(&self, name: &str) -> PinInfo {
        PinInfo {
            name: name.to_string(),
            trees: self.record.trees.len() as u64,
            blobs: self.lease.digests().len() as u64,
            bytes: self.bytes,
            expires_at: self.record.expires_at,
        }
    }
}

/// The live pins by name. The mutex guards the map only; leases take their own lock.
#[derive(Default)]
pub(crate) struct PinTable {
    pub(crate) pins: Mutex<BTreeMap<String, Pinned>>,
}

/// Why a pin name is refused: names are keys in the index and appear in logs and `cairn status`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("pin name `{name}` must have 1 to 128 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "pin name `{name}` has `{c}`; use letters, digits, `-`, `_` and `.`"
        ));
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_plain() {
        assert!(check_name("bisect-1a2b.c_d").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(129)).is_err());
        assert!(check_name("a/b").unwrap_err().contains("`/`"));
    }
}
