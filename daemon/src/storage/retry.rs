//! Retry policy: exponential backoff with jitter for transient storage failures only.
//!
//! A *budget* is the number of attempts an operation may make ([`RetryPolicy::max_attempts`]); when it
//! is spent the last transient error becomes [`StorageError::Exhausted`], which is final, so layers that
//! each retry (a request inside a resumed download) never multiply into an unbounded loop.
//! [`StorageError::NotFound`] and permanent errors return at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::{StorageError, TransferStats};

/// How delays are randomised; injectable so tests can make them deterministic.
#[derive(Clone, Default)]
pub enum Jitter {
    /// "Full jitter": a uniform random delay in `[0, backoff]` (spreads retries of many clients).
    #[default]
    Full,
    /// No randomness: exactly the exponential backoff.
    None,
    /// A caller-supplied function from the backoff to the delay actually slept.
    Custom(Arc<dyn Fn(Duration) -> Duration + Send + Sync>),
}

impl std::fmt::Debug for Jitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("Full"),
            Self::None => f.write_str("None"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Attempts and delays for retrying transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubled for each later one.
    pub base_delay: Duration,
    /// Upper bound of one backoff.
    pub max_delay: Duration,
    /// Randomisation of each backoff.
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    /// Five attempts, 200 ms doubling to at most 10 s, full jitter: rides out a short S3 `SlowDown`
    /// or a dropped connection without hiding a real outage for long.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before retry number `retry` (1 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let backoff = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        match &self.jitter {
            Jitter::Full => backoff.mul_f64(rand::random::<f64>()),
            Jitter::None => backoff,
            Jitter::Custom(f) => f(backoff),
        }
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, or the budget is spent.
    pub async fn run<T, F, Fut>(
        &self,
        stats: &TransferStats,
        key: &str,
        location: &str,
        mut op: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(err) if err.is_transient() => {
                    if attempt >= self.max_attempts.max(1) {
                        return Err(self.exhausted(key, location, attempt, &err));
                    }
                    tracing::debug!(key, attempt, error = %err, "retrying transient storage error");
                    stats.add_retry();
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The final error once `attempts` attempts failed, the last with `last`.
    pub fn exhausted(
        &self,
        key: &str,
        location: &str,
        attempts: u32,
        last: &StorageError,
    ) -> StorageError {
        let last = match last {
            StorageError::Transient { message, .. } => message.clone(),
            other => other.to_string(),
        };
        StorageError::Exhausted {
            key: key.to_owned(),
            location: location.to_owned(),
            attempts,
            last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            jitter: Jitter::None,
            ..Default::default()
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            jitter: Jitter::None,
            ..Default::default()
        };
        let delays: Vec<_> = (1..=4).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        let full = RetryPolicy {
            jitter: Jitter::Full,
            ..p
        };
        assert!((1..50).all(|r| full.delay(r) <= Duration::from_millis(350)));
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let stats = TransferStats::default();
        let out = quick(3)
            .run(&stats, "k", "mem://", || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(StorageError::transient("k", "mem://", "reset"))
                } else {
                    Ok(7)
                }
            })
            .await
            .unwrap();
        assert_eq!(
            (out, calls.load(Ordering::SeqCst), stats.snapshot().retries),
            (7, 3, 2)
        );
    }

    #[tokio::test]
    async fn budget_is_bounded_and_names_the_key() {
        let calls = AtomicU32::new(0);
        let err = quick(3)
            .run(
                &TransferStats::default(),
                "run/a.tar.zst",
                "s3://b",
                || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(StorageError::transient(
                        "run/a.tar.zst",
                        "s3://b",
                        "503 SlowDown",
                    ))
                },
            )
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(matches!(err, StorageError::Exhausted { attempts: 3, .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("`run/a.tar.zst`") && msg.contains("503 SlowDown"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn not_found_is_never_retried() {
        let calls = AtomicU32::new(0);
        let err = quick(5)
            .run(&TransferStats::default(), "k", "s3://b", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StorageError::not_found("k", "s3://b"))
            })
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
