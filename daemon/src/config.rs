//! `cairnd`'s configuration: a TOML file, overridden by `CAIRN_*` environment variables, overridden
//! by flags. Every field has a default that works on a fresh machine with no cloud account: the store
//! under the XDG cache dir, a local-directory storage backend under the XDG data dir, and a Unix
//! socket under `$XDG_RUNTIME_DIR` (or `/tmp/cairn-$UID/` when that is unset).
//!
//! ```toml
//! store_dir = "/var/cache/cairn"
//! max_bytes = 53687091200          # 50 GiB; 0 = no quota
//! socket = "/run/cairn/cairnd.sock"
//! tcp = "127.0.0.1:7411"           # optional
//! metrics = "127.0.0.1:9464"       # optional: /metrics, /status, /healthz
//! negative_ttl_secs = 60
//! verify_every_secs = 3600         # optional: scrub a random sample of blobs hourly (0 = never)
//! verify_sample = 1000             # blobs each scrub re-hashes
//! flush_delay_secs = 5             # newly written blobs are synced once ingests pause this long (≤ 30 s after the first)
//!
//! [[storage]]                      # one entry per bucket; `bucket = "*"` catches every bucket
//! bucket = "therock-ci-artifacts"
//! kind = "s3"
//! region = "us-east-2"
//! anonymous = true                 # public bucket: unsigned reads
//! trusted = true
//!
//! [[storage]]
//! bucket = "*"
//! kind = "local"
//! root = "/srv/cairn-staging"
//! ```

use cairn_fingerprint::units::ByteSize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the daemon keeps its state and how it reaches storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Local store directory (CAS + index).
    #[serde(default = "default_store_dir")]
    pub store_dir: PathBuf,
    /// Byte quota of the CAS; 0 disables eviction.
    #[serde(default)]
    pub max_bytes: u64,
    /// Unix socket path.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Optional TCP listen address (loopback recommended).
    #[serde(default)]
    pub tcp: Option<String>,
    /// File holding the bearer token TCP clients must present (required with `tcp`, unless
    /// `cairnd serve --tcp-insecure` on loopback). `CAIRN_TCP_TOKEN` may hold the token instead.
    #[serde(default)]
    pub tcp_token_file: Option<PathBuf>,
    /// Optional HTTP listen address for `/metrics`, `/status` and `/healthz`.
    #[serde(default)]
    pub metrics: Option<String>,
    /// How long a "no producer for this fingerprint" answer is cached, in seconds.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl_secs: u64,
    /// Scrub the store every this many seconds (re-hash `verify_sample` random blobs, quarantine
    /// corrupt ones); 0 = never.
    #[serde(default)]
    pub verify_every_secs: u64,
    /// Blobs each periodic scrub re-hashes.
    #[serde(default = "default_verify_sample")]
    pub verify_sample: usize,
    /// Blob files an ingest writes are synced in the background at most this many seconds later
    /// (`store/flush.rs`): what a power loss can cost in downloads, never in correctness.
    #[serde(default = "default_flush_delay")]
    pub flush_delay_secs: u64,
    /// Storage backends by bucket.
    #[serde(default = "default_storage")]
    pub storage: Vec<StorageConfig>,
    /// Predictive warm-up: follow branches and prefetch what their newest runs' jobs will need.
    #[serde(default)]
    pub warmup: WarmupConfig,
}

/// `[warmup]`: follow branches through their feed in storage and, in idle time and within 90% of
/// the quota, prefetch the inbound artifacts of `stages` × `families` of their newest runs
/// (`service/warmup.rs`, `docs/warmup.md`). Off by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    /// Whether the warm-up task runs.
    #[serde(default)]
    pub enabled: bool,
    /// Branches to follow, `OWNER/REPO:BRANCH` (e.g. `ROCm/TheRock:main`).
    #[serde(default)]
    pub branches: Vec<String>,
    /// Stages whose inbound artifacts are prefetched (topology names).
    #[serde(default)]
    pub stages: Vec<String>,
    /// GPU families prefetched for (`generic` archives always come along).
    #[serde(default)]
    pub families: Vec<String>,
    /// The newest this many runs of each branch are warmed.
    #[serde(default = "default_runs_back")]
    pub runs_back: usize,
    /// Seconds between polls of the feeds (fractions allowed: tests use 0.2).
    #[serde(default = "default_warmup_interval")]
    pub interval: f64,
    /// Average download rate cap of warm-up, bytes per second; 0 = unlimited.
    #[serde(default)]
    pub max_bytes_per_sec: u64,
    /// Nice value (0-19) of warm-up's decode threads; with a positive value they also get the idle
    /// I/O priority class.
    #[serde(default = "default_warmup_nice")]
    pub nice: i32,
    /// `BUILD_TOPOLOGY.toml`: which artifacts a stage takes in.
    #[serde(default)]
    pub topology: Option<PathBuf>,
    /// The platform of the runs to follow.
    #[serde(default = "default_warmup_platform")]
    pub platform: String,
}

fn default_runs_back() -> usize {
    1
}

fn default_warmup_interval() -> f64 {
    60.0
}

fn default_warmup_nice() -> i32 {
    10
}

fn default_warmup_platform() -> String {
    "linux".into()
}

impl Default for WarmupConfig {
    fn default() -> Self {
        WarmupConfig {
            enabled: false,
            branches: Vec::new(),
            stages: Vec::new(),
            families: Vec::new(),
            runs_back: default_runs_back(),
            interval: default_warmup_interval(),
            max_bytes_per_sec: 0,
            nice: default_warmup_nice(),
            topology: None,
            platform: default_warmup_platform(),
        }
    }
}

impl WarmupConfig {
    /// The followed branches as (repository, branch), each checked.
    pub fn followed(
        &self,
    ) -> Result<Vec<(cairn_fingerprint::layout::GithubRepo, String)>, ConfigError> {
        self.branches
            .iter()
            .map(|b| {
                let bad = |why: String| {
                    ConfigError::Invalid(format!(
                        "[warmup] branches: `{b}` {why} (expected OWNER/REPO:BRANCH, e.g. \
                         \"ROCm/TheRock:main\")"
                    ))
                };
                let (repo, branch) = b
                    .split_once(':')
                    .ok_or_else(|| bad("has no `:BRANCH`".into()))?;
                let repo = repo.parse().map_err(|e| bad(format!("{e}")))?;
                cairn_fingerprint::layout::check_branch(branch).map_err(|e| bad(e.to_string()))?;
                Ok((repo, branch.to_string()))
            })
            .collect()
    }

    /// Check the section when enabled: branches, stages, families, a topology, sane numbers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        let missing = |what: &str| {
            ConfigError::Invalid(format!(
                "[warmup] is enabled but `{what}` is empty: name what to prefetch, or set \
                 `enabled = false`"
            ))
        };
        if self.branches.is_empty() {
            return Err(missing("branches"));
        }
        if self.stages.is_empty() {
            return Err(missing("stages"));
        }
        if self.families.is_empty() {
            return Err(missing("families"));
        }
        self.followed()?;
        if self.topology.is_none() {
            return Err(ConfigError::Invalid(
                "[warmup] is enabled but `topology` is not set: give the path of \
                 BUILD_TOPOLOGY.toml (it says which artifacts a stage takes in)"
                    .into(),
            ));
        }
        if !(self.interval.is_finite() && self.interval >= 0.05) {
            return Err(ConfigError::Invalid(format!(
                "[warmup] interval = {}: expected seconds, at least 0.05",
                self.interval
            )));
        }
        if self.runs_back == 0 {
            return Err(ConfigError::Invalid(
                "[warmup] runs_back = 0 would warm nothing: use at least 1, or `enabled = false`"
                    .into(),
            ));
        }
        if !(0..=19).contains(&self.nice) {
            return Err(ConfigError::Invalid(format!(
                "[warmup] nice = {}: expected 0 (no change) to 19",
                self.nice
            )));
        }
        self.platform
            .parse::<cairn_fingerprint::Platform>()
            .map_err(|e| ConfigError::Invalid(format!("[warmup] platform: {e}")))?;
        Ok(())
    }
}

/// One storage backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Bucket this backend serves (as the run-output layout names buckets), or `*` for all.
    pub bucket: String,
    /// `local` or `s3`.
    pub kind: StorageKind,
    /// Local backend: root directory laid out like the bucket (`{root}/{prefix}/...`).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// S3: real bucket name when it differs from `bucket` (e.g. a test bucket standing in).
    #[serde(default)]
    pub s3_bucket: Option<String>,
    /// S3: custom endpoint for S3-compatible stores.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: region.
    #[serde(default)]
    pub region: Option<String>,
    /// S3: path-style addressing (most S3-compatible stores need it).
    #[serde(default)]
    pub path_style: bool,
    /// S3: unsigned requests (public buckets).
    #[serde(default)]
    pub anonymous: bool,
    /// Whether producer records read from this backend's trusted area are trusted.
    #[serde(default = "yes")]
    pub trusted: bool,
}

/// Kind of storage backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory laid out like the bucket.
    Local,
    /// Amazon S3 or an S3-compatible store.
    S3,
}

fn yes() -> bool {
    true
}

fn default_negative_ttl() -> u64 {
    60
}

/// Blobs a periodic scrub re-hashes unless told otherwise.
pub const DEFAULT_VERIFY_SAMPLE: usize = 1000;

fn default_flush_delay() -> u64 {
    crate::store::flush::FlushOptions::default().delay.as_secs()
}

fn default_verify_sample() -> usize {
    DEFAULT_VERIFY_SAMPLE
}

/// `$XDG_CACHE_HOME/cairn` (or `~/.cache/cairn`).
pub fn default_store_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("cairn")
}

/// `$XDG_DATA_HOME/cairn/storage`: the embedded default storage backend.
pub fn default_local_storage_root() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("cairn")
        .join("storage")
}

/// The default socket both sides agree on (see [`cairn_proto::default_socket`]).
pub fn default_socket() -> PathBuf {
    cairn_proto::default_socket()
}

fn default_storage() -> Vec<StorageConfig> {
    vec![StorageConfig::local("*", default_local_storage_root())]
}

impl StorageConfig {
    /// A trusted local-directory backend for `bucket`.
    pub fn local(bucket: &str, root: PathBuf) -> StorageConfig {
        StorageConfig {
            bucket: bucket.to_string(),
            kind: StorageKind::Local,
            root: Some(root),
            s3_bucket: None,
            endpoint: None,
            region: None,
            path_style: false,
            anonymous: false,
            trusted: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            store_dir: default_store_dir(),
            max_bytes: 0,
            socket: default_socket(),
            tcp: None,
            tcp_token_file: None,
            metrics: None,
            negative_ttl_secs: default_negative_ttl(),
            verify_every_secs: 0,
            verify_sample: DEFAULT_VERIFY_SAMPLE,
            flush_delay_secs: default_flush_delay(),
            storage: default_storage(),
            warmup: WarmupConfig::default(),
        }
    }
}

/// Largest config file [`Config::load`] reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// Config path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config file `{path}`: {message}")]
    Parse {
        /// Config path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Load `path` (if given), then apply `CAIRN_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = cairn_fingerprint::bounded::read_text(
                    p,
                    MAX_CONFIG_BYTES,
                    "a config file",
                    "a few KiB",
                )
                .map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Apply `CAIRN_STORE_DIR`, `CAIRN_MAX_BYTES`, `CAIRN_SOCKET`, `CAIRN_TCP`, `CAIRN_LOCAL_STORAGE`
    /// (replaces the storage list with one local catch-all backend), `CAIRN_S3_ENDPOINT` +
    /// `CAIRN_S3_BUCKET` (replaces it with one S3 catch-all backend, path-style).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("CAIRN_STORE_DIR") {
            self.store_dir = v.into();
        }
        if let Some(v) = get("CAIRN_MAX_BYTES") {
            self.max_bytes = ByteSize::parse(&v)
                .map_err(|e| ConfigError::Invalid(format!("CAIRN_MAX_BYTES: {e}")))?
                .as_u64();
        }
        if let Some(v) = get("CAIRN_SOCKET") {
            self.socket = v.into();
        }
        if let Some(v) = get("CAIRN_TCP") {
            self.tcp = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = get("CAIRN_TCP_TOKEN_FILE") {
            self.tcp_token_file = (!v.is_empty()).then(|| v.into());
        }
        if let Some(v) = get("CAIRN_METRICS") {
            self.metrics = (!v.is_empty()).then_some(v);
        }
        let number = |key: &str, v: String| -> Result<u64, ConfigError> {
            v.trim()
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("{key}: `{v}` is not a whole number")))
        };
        if let Some(v) = get("CAIRN_VERIFY_EVERY") {
            self.verify_every_secs = number("CAIRN_VERIFY_EVERY", v)?;
        }
        if let Some(v) = get("CAIRN_VERIFY_SAMPLE") {
            self.verify_sample = number("CAIRN_VERIFY_SAMPLE", v)? as usize;
        }
        if let Some(v) = get("CAIRN_FLUSH_DELAY") {
            self.flush_delay_secs = number("CAIRN_FLUSH_DELAY", v)?;
        }
        if let Some(v) = get("CAIRN_LOCAL_STORAGE") {
            self.storage = vec![StorageConfig::local("*", v.into())];
        }
        if let Some(endpoint) = get("CAIRN_S3_ENDPOINT") {
            let bucket = get("CAIRN_S3_BUCKET").ok_or_else(|| {
                ConfigError::Invalid("CAIRN_S3_ENDPOINT needs CAIRN_S3_BUCKET".into())
            })?;
            self.storage = vec![StorageConfig {
                bucket: "*".into(),
                kind: StorageKind::S3,
                root: None,
                s3_bucket: Some(bucket),
                endpoint: Some(endpoint),
                region: get("AWS_REGION").or(Some("us-east-1".into())),
                path_style: true,
                anonymous: false,
                trusted: true,
            }];
        }
        Ok(())
    }

    /// Check cross-field rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.warmup.validate()?;
        if self.storage.is_empty() {
            return Err(ConfigError::Invalid(
                "no [[storage]] backend configured".into(),
            ));
        }
        for (i, s) in self.storage.iter().enumerate() {
            if let Some(j) = self.storage[..i].iter().position(|o| o.bucket == s.bucket) {
                return Err(ConfigError::Invalid(format!(
                    "[[storage]] entries {} and {} both serve bucket `{}`: which one is used would be \
                     arbitrary; keep one entry per bucket",
                    j + 1,
                    i + 1,
                    s.bucket
                )));
            }
            match s.kind {
                StorageKind::Local if s.root.is_none() => {
                    return Err(ConfigError::Invalid(format!(
                        "local storage for bucket `{}` needs `root`",
                        s.bucket
                    )));
                }
                StorageKind::S3 if s.bucket == "*" && s.s3_bucket.is_none() => {
                    return Err(ConfigError::Invalid(
                        "an S3 catch-all backend (`bucket = \"*\"`) needs `s3_bucket`".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_env_overrides() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "CAIRN_MAX_BYTES" => Some("1M".into()),
            "CAIRN_LOCAL_STORAGE" => Some("/srv/x".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.max_bytes, 1 << 20);
        assert_eq!(c.storage[0].root.as_deref(), Some(Path::new("/srv/x")));
        assert!(
            c.apply_env(|k| (k == "CAIRN_MAX_BYTES").then(|| "lots".into()))
                .is_err()
        );
    }

    #[test]
    fn file_parses_and_rejects_unknown_keys() {
        let c: Config =
            toml::from_str("max_bytes = 5\n[[storage]]\nbucket='*'\nkind='local'\nroot='/r'\n")
                .unwrap();
        assert_eq!(c.max_bytes, 5);
        c.validate().unwrap();
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        let bad: Config = toml::from_str("[[storage]]\nbucket='*'\nkind='local'\n").unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn warmup_is_off_by_default_and_checked_when_enabled() {
        let c: Config = toml::from_str("").unwrap();
        assert!(!c.warmup.enabled);
        let on = "[warmup]\nenabled = true\nbranches = ['ROCm/TheRock:main']\nstages = ['libs']\n\
                  families = ['gfx94X']\ntopology = '/t.toml'\ninterval = 0.5\n";
        let c: Config = toml::from_str(on).unwrap();
        c.validate().unwrap();
        assert_eq!(c.warmup.followed().unwrap()[0].1, "main");
        let bad: Config = toml::from_str(&on.replace("TheRock:main", "TheRock")).unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("OWNER/REPO:BRANCH"), "{err}");
        let bad: Config = toml::from_str(&on.replace("stages = ['libs']", "stages = []")).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("stages"));
        assert!(toml::from_str::<Config>("[warmup]\nbogus = 1").is_err());
    }

    #[test]
    fn duplicate_buckets_are_an_error_naming_both_entries() {
        let entry = "[[storage]]\nbucket='*'\nkind='local'\nroot='/r'\n";
        let c: Config = toml::from_str(&format!("{entry}{entry}")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("entries 1 and 2"), "{err}");
        assert!(err.contains("bucket `*`"), "{err}");
    }
}
