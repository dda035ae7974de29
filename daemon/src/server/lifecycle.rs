//! `cairnd serve`: load the configuration, open the store, connect the backends, bind the sockets and
//! serve until SIGINT/SIGTERM. Shutdown is graceful: listeners close, in-flight requests finish, the
//! store's index is closed by drop; an ingest interrupted anyway leaves no index entry (see `store.rs`).
//! Under systemd socket activation the Unix socket comes from systemd (see `listen.rs`) instead.
//!
//! With a quota, `serve` also runs the background evictor ([`evict_in_background`]): the store's
//! ingests no longer evict inline, they wake it, and so does every blob whose last lease is
//! released. It keeps the store between two watermarks — once over the quota (high), it evicts
//! least-recently-used unleased blobs down to [`crate::store::LOW_WATERMARK`] of it (low) — in
//! steps of at most [`EVICT_STEP_BLOBS`] blobs on a blocking thread, yielding between steps, so the
//! eviction lock (which leasing needs) is never held for a whole large eviction. Without a wakeup it
//! still looks every [`EVICT_POLL`].
//!
//! `--verify-every SECS` adds a periodic scrub: a random sample of `--verify-sample` blobs re-hashed
//! on one blocking thread (the `Verify` RPC's work), corrupt ones quarantined. It is a flag (and
//! `CAIRN_VERIFY_EVERY`), not a config-file key, for now.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_fingerprint::units::ByteSize;
use clap::Args;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::server::listen::{activated_unix, bind_tcp, bind_unix};
use crate::server::{CairnService, Listener, run, run_authenticated};
use crate::service::Service;
use crate::storage::backends::Backends;
use crate::store::{LocalStore, StoreConfig};

/// Blobs one background eviction step removes at most before yielding (the eviction lock is held
/// only while one step's victims are removed: one index transaction and this many unlinks).
pub const EVICT_STEP_BLOBS: usize = 512;

/// How often the background evictor looks at the quota when nothing woke it.
pub const EVICT_POLL: Duration = Duration::from_secs(10);

/// Flags of `cairnd serve`; each overrides the config file and the `CAIRN_*` environment.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML; see the `config` module docs for every key).
    #[arg(long, value_name = "FILE", env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Store directory (CAS + index) [default: $XDG_CACHE_HOME/cairn].
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Unix socket path [default: $XDG_RUNTIME_DIR/cairn/cairnd.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Also listen on TCP (e.g. 127.0.0.1:7411).
    #[arg(long, value_name = "ADDR")]
    pub tcp: Option<String>,
    /// File holding the bearer token every TCP request must carry (`authorization: Bearer <token>`);
    /// the `CAIRN_TCP_TOKEN` environment variable may hold the token itself instead.
    #[arg(long, value_name = "FILE", env = "CAIRN_TCP_TOKEN_FILE")]
    pub tcp_token_file: Option<PathBuf>,
    /// Serve TCP without a token; only allowed on a loopback address.
    #[arg(long)]
    pub tcp_insecure: bool,
    /// Serve Prometheus `/metrics`, `/status` and `/healthz` over HTTP on this address.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// CAS byte quota, e.g. 50G (0 = none).
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<ByteSize>,
    /// Use one local-directory storage backend at DIR for every bucket.
    #[arg(long, value_name = "DIR")]
    pub local_storage: Option<PathBuf>,
    /// Use one S3-compatible backend at URL (path-style) for every bucket...
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// ...storing everything in this bucket.
    #[arg(long, value_name = "NAME")]
    pub s3_bucket: Option<String>,
    /// Make the socket group-accessible (0660) so CI containers of one group can share the daemon.
    #[arg(long)]
    pub group_access: bool,
    /// Scrub the store every SECS seconds: re-hash a random sample of `--verify-sample` blobs and
    /// quarantine corrupt ones, as `cairn verify --sample` does (0 = never) [config:
    /// `verify_every_secs`; env: CAIRN_VERIFY_EVERY].
    #[arg(long, value_name = "SECS")]
    pub verify_every: Option<u64>,
    /// Blobs each periodic scrub re-hashes [default: 1000; config: `verify_sample`; env:
    /// CAIRN_VERIFY_SAMPLE].
    #[arg(long, value_name = "N")]
    pub verify_sample: Option<usize>,
    /// Sync newly written blobs in the background once ingests have paused for SECS seconds (at
    /// the latest 30 s, or SECS if longer, after the first); a power loss before that costs their
    /// download again, never a wrong file [default: 5; config: `flush_delay_secs`; env:
    /// CAIRN_FLUSH_DELAY].
    #[arg(long, value_name = "SECS")]
    pub flush_delay: Option<u64>,
}

impl ServeArgs {
    /// The effective configuration: file, then environment, then these flags.
    pub fn config(&self) -> Result<Config> {
        let mut cfg = Config::load(self.config.as_deref())?;
        let flags = |k: &str| -> Option<String> {
            match k {
                "CAIRN_STORE_DIR" => self.store.as_ref().map(|p| p.display().to_string()),
                "CAIRN_SOCKET" => self.socket.as_ref().map(|p| p.display().to_string()),
                "CAIRN_TCP" => self.tcp.clone(),
                "CAIRN_TCP_TOKEN_FILE" => self
                    .tcp_token_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                "CAIRN_METRICS" => self.metrics.clone(),
                "CAIRN_MAX_BYTES" => self.max_bytes.map(|b| b.as_u64().to_string()),
                "CAIRN_LOCAL_STORAGE" => {
                    self.local_storage.as_ref().map(|p| p.display().to_string())
                }
                "CAIRN_S3_ENDPOINT" => self.s3_endpoint.clone(),
                "CAIRN_S3_BUCKET" => self.s3_bucket.clone(),
                "CAIRN_VERIFY_EVERY" => self.verify_every.map(|s| s.to_string()),
                "CAIRN_VERIFY_SAMPLE" => self.verify_sample.map(|n| n.to_string()),
                "CAIRN_FLUSH_DELAY" => self.flush_delay.map(|s| s.to_string()),
                "AWS_REGION" => std::env::var("AWS_REGION").ok(),
                _ => None,
            }
        };
        cfg.apply_env(flags)?;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Run the daemon until a shutdown signal.
pub async fn serve(args: ServeArgs) -> Result<()> {
    // Signal handlers first: from the moment a listener exists (and certainly from the moment
    // readiness is announced) a SIGTERM must mean "shut down gracefully", never the default action
    // of dying with the socket file left behind.
    let shutdown = ShutdownSignals::install().context("installing SIGINT/SIGTERM handlers")?;
    let cfg = args.config()?;
    let store_cfg = StoreConfig {
        max_bytes: (cfg.max_bytes > 0).then_some(cfg.max_bytes),
        flush: crate::store::flush::FlushOptions {
            delay: Duration::from_secs(cfg.flush_delay_secs),
        },
        ..StoreConfig::default()
    };
    let store = LocalStore::open(&cfg.store_dir, store_cfg)
        .with_context(|| format!("opening store `{}`", cfg.store_dir.display()))?;
    let backends = Backends::from_config(&cfg.storage)
        .await
        .context("configuring storage backends")?;
    for b in backends.all() {
        info!(bucket = %b.bucket, storage = %b.storage.describe(), trusted = b.trusted, "storage backend");
    }
    let service = Arc::new(Service::new(
        store,
        backends,
        Duration::from_secs(cfg.negative_ttl_secs),
    ));
    let grpc = CairnService::new(service.clone());
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let evictor = if store_cfg.max_bytes.is_some() {
        let store = service.store().clone();
        store.set_background_eviction(true);
        let rx = stop_tx.subscribe();
        Some(tokio::spawn(evict_in_background(store, rx)))
    } else {
        None
    };
    let warmup = if cfg.warmup.enabled {
        let plan = crate::service::warmup::WarmupPlan::from_config(&cfg.warmup)?;
        service.warmup.enable(cfg.warmup.branches.clone());
        info!(branches = ?cfg.warmup.branches, interval = ?plan.interval, "warm-up enabled");
        Some(warm_up_in_background(
            service.clone(),
            plan,
            stop_tx.subscribe(),
        )?)
    } else {
        None
    };
    if cfg.verify_every_secs > 0 {
        let rx = stop_tx.subscribe();
        tokio::spawn(scrub_periodically(
            service.clone(),
            Duration::from_secs(cfg.verify_every_secs),
            cfg.verify_sample,
            rx,
        ));
    }

    // Decided before binding anything: a daemon that would serve TCP unauthenticated does not start.
    let tcp_auth = match &cfg.tcp {
        Some(addr) => {
            let token = crate::server::auth::load_token(
                std::env::var("CAIRN_TCP_TOKEN").ok(),
                cfg.tcp_token_file.as_deref(),
            )?;
            Some((
                addr.clone(),
                crate::server::auth::tcp_policy(addr, token, args.tcp_insecure).await?,
            ))
        }
        None => None,
    };
    let mode = if args.group_access { 0o660 } else { 0o600 };
    // Socket-activated (systemd `cairnd.socket`): use the passed socket; systemd owns its file.
    let activated = activated_unix()?;
    let socket_activated = activated.is_some();
    let unix = match activated {
        Some(l) => l,
        None => bind_unix(&cfg.socket, mode).await?,
    };
    // The path we really serve on (an activated socket need not be `cfg.socket`).
    let socket_path = unix
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from))
        .unwrap_or_else(|| cfg.socket.clone());
    info!(socket = %socket_path.display(), socket_activated, store = %cfg.store_dir.display(), "cairnd listening");
    eprintln!(
        "cairnd: listening on unix:{}{}",
        socket_path.display(),
        if socket_activated {
            " (socket-activated)"
        } else {
            ""
        }
    );
    // Bind every listener before serving on any: a client (or a readiness probe) that reaches the
    // Unix socket can rely on the TCP and metrics listeners being there too.
    let tcp = match tcp_auth {
        Some((addr, auth)) => Some((bind_tcp(&addr).await?, auth)),
        None => None,
    };
    let http = match &cfg.metrics {
        Some(addr) => Some(bind_tcp(addr).await?),
        None => None,
    };
    let mut tasks = Vec::new();
    if let Some((tcp, auth)) = tcp {
        let how = if auth.is_some() {
            "bearer token required"
        } else {
            "no token (--tcp-insecure)"
        };
        eprintln!("cairnd: listening on http://{} ({how})", tcp.local_addr()?);
        let mut rx = stop_tx.subscribe();
        let grpc = grpc.clone();
        tasks.push(tokio::spawn(async move {
            run_authenticated(grpc, Listener::Tcp(tcp), auth, async move {
                let _ = rx.recv().await;
            })
            .await
        }));
    }
    if let Some(http) = http {
        eprintln!("cairnd: metrics on http://{}/metrics", http.local_addr()?);
        let mut rx = stop_tx.subscribe();
        let service = service.clone();
        tokio::spawn(crate::server::http::serve_http(http, service, async move {
            let _ = rx.recv().await;
        }));
    }
    {
        let mut rx = stop_tx.subscribe();
        tasks.push(tokio::spawn(async move {
            run(grpc, Listener::Unix(unix), async move {
                let _ = rx.recv().await;
            })
            .await
        }));
    }
    // Every listener is bound and served: tell systemd (`Type=notify`), if it is asking.
    if let Err(e) = crate::server::notify::notify("READY=1\nSTATUS=serving") {
        warn!(error = %e, "could not notify the service manager (NOTIFY_SOCKET)");
    }
    shutdown.recv().await;
    let _ = crate::server::notify::notify("STOPPING=1");
    info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(());
    for t in tasks {
        t.await
            .context("server task panicked")?
            .context("gRPC server failed")?;
    }
    if let Some(e) = evictor {
        let _ = e.await;
    }
    if let Some(w) = warmup {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    // What ingests wrote since the last background flush becomes durable before we exit, so the
    // next start has nothing to re-check.
    let store = service.store().clone();
    match tokio::task::spawn_blocking(move || store.flush()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            warn!(error = %e, "syncing newly written blobs at shutdown failed; the next start re-checks them")
        }
        Err(e) => {
            warn!(error = %e, "the shutdown flush panicked; the next start re-checks the blobs")
        }
    }
    if !socket_activated {
        let _ = std::fs::remove_file(&cfg.socket);
    }
    Ok(())
}

/// Every `every`, re-hash a random `sample` of the store's blobs (quarantining corrupt ones) until
/// `stop` fires.
async fn scrub_periodically(
    service: Arc<Service>,
    every: Duration,
    sample: usize,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match service.verify(Some(sample)).await {
            Ok(r) if r.corrupt.is_empty() => {}
            Ok(r) => warn!(
                corrupt = r.corrupt.len(),
                checked = r.checked,
                "periodic scrub quarantined corrupt blobs; the next fetch downloads them again"
            ),
            Err(e) => warn!(error = %e, "periodic scrub failed"),
        }
    }
}

/// Run warm-up polls every `plan.interval` until `stop` fires, on a thread of its own with its own
/// runtime, whose threads (the poll loop and the decode threads its ingests use) run at
/// `plan.nice` with idle I/O priority: client requests on the main runtime keep theirs. A poll in
/// progress is dropped at `stop` (downloads and ingests are cancel-safe, as for a client that
/// disconnects).
pub fn warm_up_in_background(
    service: Arc<Service>,
    plan: crate::service::warmup::WarmupPlan,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) -> Result<std::thread::JoinHandle<()>> {
    let nice = plan.nice;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .on_thread_start(move || crate::service::warmup::lower_thread_priority(nice))
        .build()
        .context("starting the warm-up runtime")?;
    std::thread::Builder::new()
        .name("cairnd-warmup".into())
        .spawn(move || {
            crate::service::warmup::lower_thread_priority(nice);
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = stop.recv() => return,
                        r = service.warm_up_once(&plan) => {
                            if let Err(e) = r {
                                debug!(error = %e, "warm-up poll failed");
                            }
                        }
                    }
                    tokio::select! {
                        _ = stop.recv() => return,
                        _ = tokio::time::sleep(plan.interval) => {}
                    }
                }
            })
        })
        .context("starting the warm-up thread")
}

/// Keep `store` under its quota until `stop` fires: see the module docs.
pub async fn evict_in_background(
    store: Arc<LocalStore>,
    mut stop: tokio::sync::broadcast::Receiver<()>,
) {
    loop {
        let mut continuing = false;
        loop {
            let s = store.clone();
            let step =
                tokio::task::spawn_blocking(move || s.evict_step(EVICT_STEP_BLOBS, continuing))
                    .await;
            match step {
                Ok(Ok(r)) => {
                    if r.evicted_blobs > 0 {
                        debug!(
                            blobs = r.evicted_blobs,
                            bytes = r.evicted_bytes,
                            leased_kept = r.skipped_leased,
                            store_bytes = store.bytes(),
                            "background eviction"
                        );
                    }
                    if !r.more {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "background eviction failed; retrying later");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "background eviction task failed");
                    break;
                }
            }
            continuing = true;
            tokio::task::yield_now().await;
        }
        tokio::select! {
            _ = stop.recv() => return,
            _ = store.eviction_wakeup().notified() => {}
            _ = tokio::time::sleep(EVICT_POLL) => {}
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment [`ShutdownSignals::install`] returns.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn recv(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
