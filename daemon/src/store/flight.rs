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

/// Per key: the lock whose holder has the turn, and how many callers hold or await it.
type Claims<K> = HashMap<K, (Arc<tokio::sync::Mutex<()>>, usize)>;

/// Async single-flight by key for work whose result is cached elsewhere (the index): the first caller
/// of a key holds its turn, later callers wait for it and then look in the cache again. A key's entry
/// exists only while someone holds or awaits its turn (a claim count, kept under the map's lock; the
/// last [`Turn`] to drop removes it), so the map holds the keys in flight now, never every key seen.
///
/// Used for downloads (key: bucket/object) and producer-record lookups (key: area and fingerprint).
#[derive(Debug)]
pub struct KeyedFlight<K> {
    inflight: Arc<Mutex<Claims<K>>>,
}

impl<K> Default for KeyedFlight<K> {
    fn default() -> Self {
        KeyedFlight {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// A caller's claim on one key of a [`KeyedFlight`]: its turn once [`KeyedFlight::turn`] returns.
/// Dropping it (also while still waiting) lets the next waiter in and removes the key's entry when no
/// one else claims it.
pub struct Turn<K: Eq + Hash + Clone> {
    key: K,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    inflight: Arc<Mutex<Claims<K>>>,
}

impl<K: Eq + Hash + Clone> Drop for Turn<K> {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.guard.take());
        if let Some((_, claims)) = map.get_mut(&self.key) {
            *claims -= 1;
            if *claims == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedFlight<K> {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wait for `key`'s turn. Cancel-safe: a caller dropped while waiting gives up its claim.
    pub async fn turn(&self, key: K) -> Turn<K> {
        let slot = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(key.clone()).or_default();
            entry.1 += 1;
            entry.0.clone()
        };
        let mut turn = Turn {
            key,
            guard: None,
            inflight: self.inflight.clone(),
        };
        turn.guard = Some(slot.lock_owned().await);
        turn
    }

    /// Keys in flight now (held or awaited).
    pub fn len(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no key is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keyed_flight_serialises_one_key_and_forgets_finished_keys() {
        let flight = Arc::new(KeyedFlight::<u32>::new());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..4000u32 {
            let flight = flight.clone();
            let running = running.clone();
            tasks.push(tokio::spawn(async move {
                // 4000 callers over 1000 keys: four share each key.
                let _turn = flight.turn(i % 1000).await;
                let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert!(now < 1000, "more turns at once than keys");
                tokio::task::yield_now().await;
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert!(flight.is_empty(), "{} keys left in the map", flight.len());
    }

    #[tokio::test]
    async fn keyed_flight_waiter_dropped_while_waiting_leaves_no_entry() {
        let flight = KeyedFlight::<&str>::new();
        let held = flight.turn("k").await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), flight.turn("k")).await;
        assert!(
            waiting.is_err(),
            "the key is held, the second turn must wait"
        );
        assert_eq!(flight.len(), 1);
        drop(held);
        assert!(flight.is_empty());
    }
}
