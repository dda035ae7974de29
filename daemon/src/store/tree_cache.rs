//! Parsed trees kept in memory, so a warm fetch does not re-read and re-verify their JSON.
//!
//! A warm bootstrap of a stage asks for a hundred trees holding tens of thousands of entries;
//! parsing them from the index and checking each against its digest was most of the daemon's work
//! for such a request. Trees are content-addressed and immutable, so a cached one can never be
//! stale: at worst its blobs were evicted since, which callers check anyway (`has_blobs`).
//!
//! Bounded by the number of entries held (the memory a tree costs grows with them), least recently
//! used trees leave first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_fingerprint::{Blake3, Tree};

/// Entries (files, dirs, links) held at most: ~150 bytes each in memory, so ~40 MB.
pub const DEFAULT_MAX_ENTRIES: usize = 256 * 1024;

/// The cache. Cheap to share; one lock, held only for map operations.
#[derive(Debug)]
pub struct TreeCache {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    trees: HashMap<Blake3, (Arc<Tree>, u64)>,
    entries: usize,
    clock: u64,
}

impl TreeCache {
    /// An empty cache holding at most `max_entries` tree entries in total.
    pub fn new(max_entries: usize) -> TreeCache {
        TreeCache {
            max_entries,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The tree with this digest, if cached.
    pub fn get(&self, digest: &Blake3) -> Option<Arc<Tree>> {
        let mut inner = self.inner.lock().expect("tree cache poisoned");
        inner.clock += 1;
        let now = inner.clock;
        let (tree, used) = inner.trees.get_mut(digest)?;
        *used = now;
        Some(tree.clone())
    }

    /// Keep `tree` (already verified against `digest`); a tree larger than the whole cache is not
    /// kept.
    pub fn insert(&self, digest: Blake3, tree: Arc<Tree>) {
        let size = tree.entries.len().max(1);
        if size > self.max_entries {
            return;
        }
        let mut inner = self.inner.lock().expect("tree cache poisoned");
        inner.clock += 1;
        let now = inner.clock;
        if let Some((_, used)) = inner.trees.get_mut(&digest) {
            *used = now;
            return;
        }
        while inner.entries + size > self.max_entries {
            // A linear scan: the cache holds at most a few thousand trees.
            let Some(oldest) = inner
                .trees
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(d, _)| *d)
            else {
                break;
            };
            if let Some((evicted, _)) = inner.trees.remove(&oldest) {
                inner.entries -= evicted.entries.len().max(1);
            }
        }
        inner.entries += size;
        inner.trees.insert(digest, (tree, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_fingerprint::RelPath;
    use cairn_fingerprint::tree::{EntryKind, TreeEntry};

    fn tree(files: usize, tag: &str) -> Arc<Tree> {
        let entries = (0..files)
            .map(|i| TreeEntry {
                path: RelPath::new(&format!("{tag}/f{i}")).unwrap(),
                kind: EntryKind::File,
                mode: 0o644,
                size: 1,
                blake3: Some(Blake3::of(tag.as_bytes())),
                link_target: None,
            })
            .collect();
        Arc::new(Tree::new(Vec::new(), entries))
    }

    #[test]
    fn least_recently_used_trees_leave_first_and_the_bound_holds() {
        let cache = TreeCache::new(10);
        let (a, b, c) = (tree(4, "a"), tree(4, "b"), tree(4, "c"));
        cache.insert(a.digest(), a.clone());
        cache.insert(b.digest(), b.clone());
        // `a` used after `b`: `b` is the one to go when `c` needs room.
        assert!(cache.get(&a.digest()).is_some());
        cache.insert(c.digest(), c.clone());
        assert!(cache.get(&b.digest()).is_none());
        assert!(Arc::ptr_eq(&cache.get(&a.digest()).unwrap(), &a));
        assert!(cache.get(&c.digest()).is_some());
        assert_eq!(cache.inner.lock().unwrap().entries, 8);
        // Larger than the whole cache: not kept, nothing evicted for it.
        let big = tree(11, "big");
        cache.insert(big.digest(), big.clone());
        assert!(cache.get(&big.digest()).is_none());
        assert!(cache.get(&a.digest()).is_some());
    }
}
