//! The S3-compatible test server: a handle to the moto server that `scripts/test` starts on 127.0.0.1.
//!
//! The endpoint comes from `CAIRN_TEST_S3_ENDPOINT` (with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//! `AWS_REGION` set as the script does). When it is unset, S3 tests skip with a loud message on stderr,
//! except under CI (`CI` set), where a missing server is a failure: a green CI run must have run them.
//! Each test gets its own bucket, so tests run in parallel against one server without seeing each other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_daemon::storage::{RetryPolicy, S3Config, S3Storage};

/// The environment variable holding the test server's endpoint, e.g. `http://127.0.0.1:5000`.
pub const ENDPOINT_VAR: &str = "CAIRN_TEST_S3_ENDPOINT";

/// A running S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Server {
    endpoint: String,
}

/// Returns the test server, or returns from the calling test after printing why it is skipped.
///
/// ```ignore
/// let s3 = cairn_testkit::require_s3!();
/// ```
#[macro_export]
macro_rules! require_s3 {
    () => {
        // libtest names each test's thread after the test.
        match $crate::s3server::S3Server::from_env(
            &::std::thread::current()
                .name()
                .map_or_else(|| module_path!().to_owned(), str::to_owned),
        ) {
            Some(server) => server,
            None => return,
        }
    };
}

impl S3Server {
    /// The server named by [`ENDPOINT_VAR`]; `None` (after a loud notice) when unset locally.
    ///
    /// # Panics
    /// When the variable is unset and `CI` is set, or when the AWS test credentials are missing: the
    /// tests could not have run, and saying so beats a confusing signing error.
    pub fn from_env(test: &str) -> Option<Self> {
        match std::env::var(ENDPOINT_VAR) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                assert!(
                    std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
                        && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some(),
                    "{ENDPOINT_VAR} is set but AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not; \
                     hint: export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1"
                );
                Some(Self {
                    endpoint: endpoint.trim().trim_end_matches('/').to_owned(),
                })
            }
            _ if std::env::var_os("CI").is_some() => panic!(
                "{ENDPOINT_VAR} is not set under CI, so `{test}` cannot run; hint: run the suite through \
                 scripts/test, which starts the S3 test server"
            ),
            _ => {
                eprintln!(
                    "\n!!!!!!!! SKIPPED `{test}`: {ENDPOINT_VAR} is not set, so no S3 test server is available.\n\
                     !!!!!!!! Run scripts/test (it starts moto), or start `moto_server -H 127.0.0.1 -p PORT` and export\n\
                     !!!!!!!! {ENDPOINT_VAR}=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=testing \
                     AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1\n"
                );
                None
            }
        }
    }

    /// The server's endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client configuration for `bucket` on this server: path-style, `us-east-1`, quick retries.
    pub fn config(&self, bucket: &str) -> S3Config {
        self.config_via(&self.endpoint, bucket)
    }

    /// Like [`S3Server::config`], but reaching the server through `endpoint` (a fault proxy in front of it).
    pub fn config_via(&self, endpoint: &str, bucket: &str) -> S3Config {
        let mut config = S3Config::new(bucket);
        config.endpoint = Some(endpoint.to_owned());
        config.region = Some("us-east-1".to_owned());
        config.force_path_style = true;
        config.connect_timeout = Duration::from_secs(5);
        config.read_timeout = Duration::from_secs(10);
        // Tests fail fast instead of waiting out production backoffs.
        config.retry = RetryPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..RetryPolicy::default()
        };
        config
    }

    /// Creates a bucket with a name unique to this process and call, and returns a backend for it.
    pub async fn new_bucket(&self, test: &str) -> anyhow::Result<S3Storage> {
        let name = unique_bucket_name(test);
        let storage = S3Storage::connect(self.config(&name)).await;
        storage
            .client()
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create bucket `{name}` on `{}`: {e:?}",
                    self.endpoint
                )
            })?;
        Ok(storage)
    }
}

/// A valid bucket name (3–63 chars of `a-z0-9-`) from the test name, the process and a counter.
pub fn unique_bucket_name(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let slug: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let suffix = format!("-{}-{n}", std::process::id());
    let room = 63 - "cairn-".len() - suffix.len();
    let slug = slug
        .get(slug.len().saturating_sub(room)..)
        .unwrap_or_default()
        .trim_matches('-');
    let slug = if slug.is_empty() { "test" } else { slug };
    format!("cairn-{slug}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_are_valid_and_unique() {
        let a = unique_bucket_name(
            "e2e::storage::Put_If_Absent race with a very very long test name indeed",
        );
        let b = unique_bucket_name(
            "e2e::storage::Put_If_Absent race with a very very long test name indeed",
        );
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert!(name.len() <= 63 && name.len() >= 3, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.ends_with('-') && !name.contains("--"), "{name}");
        }
    }
}
