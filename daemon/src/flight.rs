//! Single-flight: concurrent requests for the same key perform the work once.
//!
//! The first caller for a key becomes the *leader* and runs the work; callers arriving while it runs
//! become *followers* and block until the leader publishes its result, which they share (errors
//! shared as `Arc`, so one failure reaches every waiter intact). A caller arriving after the leader
//! finished starts a new flight: results are not cached here (the index does that).
//!
//! Blocking (std `Mutex` + `Condvar`), because the work it guards — decompressing, hashing, writing —
//! runs on blocking threads anyway; async callers reach it through `spawn_blocking`. The leader holds
//! an RAII guard that publishes "abandoned" and removes the entry if the work panics, so followers
//! never wait forever.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex};

/// Whether a caller did the work or shared someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This caller ran the work.
    Leader,
    /// This caller waited for a concurrent leader and shares its result.
    Follower,
}

/// A flight's published outcome.
pub type Shared<V, E> = Result<V, Arc<E>>;

struct Slot<V, E> {
    /// `None` until the leader publishes; guarded by the mutex so followers can wait on `ready`.
    result: Mutex<Option<Shared<V, E>>>,
    ready: Condvar,
    /// Followers currently waiting (observability and tests).
    followers: Mutex<usize>,
}

/// A set of in-flight operations keyed by `K`, producing `V` or an error `E`.
pub struct SingleFlight<K, V, E> {
    /// In-flight slots. Held only to look up/insert/remove, never while the work runs.
    inflight: Mutex<HashMap<K, Arc<Slot<V, E>>>>,
}

impl<K, V, E> Default for SingleFlight<K, V, E> {
    fn default() -> Self {
        SingleFlight {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone, E> SingleFlight<K, V, E> {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `work` for `key` unless a flight for it is already running, in which case wait for that
    /// flight's result. `abandoned` builds the error followers receive if the leader panics.
    pub fn run(
        &self,
        key: K,
        abandoned: impl FnOnce() -> E,
        work: impl FnOnce() -> Result<V, E>,
    ) -> (Shared<V, E>, Role) {
        let (slot, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(slot) => {
                    *slot.followers.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    (slot.clone(), false)
                }
                None => {
                    let slot = Arc::new(Slot {
                        result: Mutex::new(None),
                        ready: Condvar::new(),
                        followers: Mutex::new(0),
                    });
                    map.insert(key.clone(), slot.clone());
                    (slot, true)
                }
            }
        };

        if !leader {
            let mut result = slot.result.lock().unwrap_or_else(|p| p.into_inner());
            while result.is_none() {
                result = slot.ready.wait(result).unwrap_or_else(|p| p.into_inner());
            }
            *slot.followers.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
            return (result.clone().expect("checked above"), Role::Follower);
        }

        let mut guard = LeaderGuard {
            flight: self,
            key: Some(key),
            slot,
            abandoned: Some(abandoned),
        };
        let outcome = work().map_err(Arc::new);
        guard.publish(outcome.clone());
        (outcome, Role::Leader)
    }

    /// Followers waiting on `key`'s flight right now (0 when none is running).
    pub fn followers(&self, key: &K) -> usize {
        let map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).map_or(0, |s| {
            *s.followers.lock().unwrap_or_else(|p| p.into_inner())
        })
    }

    /// Number of flights running.
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// True when no flight is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Publishes the leader's result and removes the flight; on drop without a result (panic), publishes
/// the `abandoned` error instead.
struct LeaderGuard<'a, K: Eq + Hash, V, E, A: FnOnce() -> E> {
    flight: &'a SingleFlight<K, V, E>,
    key: Option<K>,
    slot: Arc<Slot<V, E>>,
    abandoned: Option<A>,
}

impl<K: Eq + Hash, V, E, A: FnOnce() -> E> LeaderGuard<'_, K, V, E, A> {
    fn publish(&mut self, outcome: Shared<V, E>) {
        let Some(key) = self.key.take() else { return };
        // Remove the entry first: a caller arriving after this point starts a fresh flight instead of
        // joining one that is over.
        self.flight
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        *self.slot.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.slot.ready.notify_all();
    }
}

impl<K: Eq + Hash, V, E, A: FnOnce() -> E> Drop for LeaderGuard<'_, K, V, E, A> {
    fn drop(&mut self) {
        if self.key.is_some() {
            let err = (self.abandoned.take().expect("taken once"))();
            self.publish(Err(Arc::new(err)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn concurrent_callers_share_one_run_and_its_error() {
        let flight: SingleFlight<&str, u32, String> = SingleFlight::new();
        let runs = AtomicUsize::new(0);
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        flight.run(
                            "k",
                            || "abandoned".to_string(),
                            || {
                                runs.fetch_add(1, Ordering::SeqCst);
                                // Hold the flight open until the other three have joined it.
                                while flight.followers(&"k") < 3 {
                                    std::thread::yield_now();
                                }
                                Err::<u32, _>("boom".to_string())
                            },
                        )
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(
                results.iter().filter(|(_, r)| *r == Role::Leader).count(),
                1
            );
            for (r, _) in &results {
                assert_eq!(r.as_ref().unwrap_err().as_str(), "boom");
            }
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flight.is_empty());
    }

    #[test]
    fn a_panicking_leader_releases_followers_with_abandoned() {
        let flight: Arc<SingleFlight<u8, u32, String>> = Arc::new(SingleFlight::new());
        let f2 = flight.clone();
        let leader = std::thread::spawn(move || {
            f2.run(
                1,
                || "abandoned".to_string(),
                || {
                    while f2.followers(&1) < 1 {
                        std::thread::yield_now();
                    }
                    panic!("leader dies")
                },
            )
        });
        // Wait until the leader has registered the flight, then join it.
        while flight.is_empty() {
            std::thread::yield_now();
        }
        let (r, role) = flight.run(1, || "unused".to_string(), || Ok(7));
        assert!(leader.join().is_err());
        // Either we joined the doomed flight, or (if it was already gone) we led a new one.
        match role {
            Role::Follower => assert_eq!(r.unwrap_err().as_str(), "abandoned"),
            Role::Leader => assert_eq!(r.unwrap(), 7),
        }
        assert!(flight.is_empty());
    }
}
