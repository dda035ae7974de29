//! A real `cairnd serve` process for end-to-end tests: a temporary store, a Unix socket in a
//! temporary directory (optionally a TCP listener on 127.0.0.1), and a storage backend that is a
//! local directory or a bucket on the S3 test server. The handle waits until the daemon answers
//! `Stats`, can SIGKILL and restart it (same store, same storage), and kills it on drop.
//!
//! The daemon's stderr goes to a log file in the temporary directory; [`Daemon::log`] returns it for
//! assertion messages.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_client::api::{self, Stats};
use cairn_client::connect::{DaemonAddr, connect};

use crate::bin_path::bin_path;

/// A temporary directory for end-to-end test data: under `$CAIRN_TEST_SCRATCH` when set, else on
/// the tmpfs `/dev/shm` when it is writable with at least 1 GiB free (containers often have a 64 MiB
/// one), else in the default temp dir. The
/// daemon fsyncs every blob, object and directory it writes; on a disk that makes a small e2e test
/// take seconds of I/O wait, on tmpfs milliseconds. Durability itself is tested by the crash tests.
pub fn scratch_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let base = match std::env::var_os("CAIRN_TEST_SCRATCH") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            let shm = Path::new("/dev/shm");
            let writable = free_bytes(shm).is_some_and(|free| free >= 1 << 30)
                && tempfile::Builder::new()
                    .prefix(".cairn-probe-")
                    .tempfile_in(shm)
                    .is_ok();
            writable.then(|| shm.to_path_buf())
        }
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    match base {
        Some(dir) => builder.tempdir_in(dir),
        None => builder.tempdir(),
    }
}

/// Free bytes of the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a properly sized out-parameter.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    Some(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Where the daemon's storage lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A local directory serving every bucket.
    Local(PathBuf),
    /// A bucket on an S3-compatible server (credentials from the `AWS_*` environment).
    S3 {
        /// Endpoint URL, e.g. `http://127.0.0.1:5000`.
        endpoint: String,
        /// Bucket, which must exist.
        bucket: String,
    },
}

/// Options of a test daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also listen on TCP (a free port on 127.0.0.1), for remote-client tests.
    pub tcp: bool,
    /// Serve a group-accessible socket (`--group-access`), for tests with clients of other users.
    pub group_access: bool,
    /// More `cairnd serve` arguments (e.g. `--max-bytes 100K`), kept across restarts.
    pub args: Vec<String>,
}

/// A running (or killed) `cairnd serve`.
#[derive(Debug)]
pub struct Daemon {
    dir: tempfile::TempDir,
    storage: Storage,
    tcp: Option<String>,
    group_access: bool,
    args: Vec<String>,
    child: Option<Child>,
}

/// How long the daemon may take to answer its first `Stats` (startup, not a performance claim).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Daemon {
    /// Start a daemon with a fresh store over `storage`.
    pub fn start(storage: Storage) -> Result<Daemon> {
        Daemon::start_with(storage, Options::default())
    }

    /// Start a daemon with a fresh store over `storage` and `opts`.
    pub fn start_with(storage: Storage, opts: Options) -> Result<Daemon> {
        let dir = scratch_dir("cairnd-")?;
        let tcp = if opts.tcp {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            Some(format!("127.0.0.1:{}", l.local_addr()?.port()))
        } else {
            None
        };
        let mut d = Daemon {
            dir,
            storage,
            tcp,
            group_access: opts.group_access,
            args: opts.args,
            child: None,
        };
        d.spawn()?;
        Ok(d)
    }

    /// The store directory (CAS and index).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("cairnd.sock")
    }

    /// The address for `cairn --daemon` over the Unix socket.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// The address over TCP, when started with [`Options::tcp`].
    pub fn tcp_addr(&self) -> Option<String> {
        self.tcp.as_ref().map(|a| format!("http://{a}"))
    }

    /// The bearer token its TCP listener requires (unique to this daemon's directory).
    pub fn tcp_token(&self) -> String {
        let dir = self.dir.path().display().to_string();
        format!("cairn-test-token-{}", blake3::hash(dir.as_bytes()).to_hex())
    }

    /// A `cairn` command talking to this daemon over TCP, with its token in `CAIRN_TOKEN`.
    ///
    /// # Panics
    /// When the daemon was started without [`Options::tcp`].
    pub fn cairn_tcp(&self) -> Command {
        let mut cmd = cairn_command(&self.tcp_addr().expect("daemon started with Options::tcp"));
        cmd.env("CAIRN_TOKEN", self.tcp_token());
        cmd
    }

    /// The storage it serves.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("cairnd.log")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<()> {
        // `run/` is left to cairnd, which creates it 0700 (0750 with group access), as it must be.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(bin_path("cairnd"));
        cmd.arg("serve")
            .arg("--store")
            .arg(self.store_dir())
            .arg("--socket")
            .arg(self.socket());
        // The test decides everything: no ambient configuration.
        for var in [
            "CAIRN_CONFIG",
            "CAIRN_SOCKET",
            "CAIRN_STORE_DIR",
            "CAIRN_TCP",
            "CAIRN_MAX_BYTES",
            "CAIRN_LOCAL_STORAGE",
            "CAIRN_S3_ENDPOINT",
            "CAIRN_S3_BUCKET",
            "CAIRN_TCP_TOKEN",
            "CAIRN_TCP_TOKEN_FILE",
            "CAIRN_FLUSH_DELAY",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("XDG_CONFIG_HOME", self.dir.path().join("config"));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        if self.group_access {
            cmd.arg("--group-access");
        }
        if let Some(tcp) = &self.tcp {
            // TCP requires a token: a 0600 file in the daemon's directory.
            let token_file = self.dir.path().join("tcp-token");
            fs::write(&token_file, format!("{}\n", self.tcp_token()))?;
            fs::set_permissions(
                &token_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            cmd.arg("--tcp")
                .arg(tcp)
                .arg("--tcp-token-file")
                .arg(token_file);
        }
        match &self.storage {
            Storage::Local(dir) => {
                cmd.arg("--local-storage").arg(dir);
            }
            Storage::S3 { endpoint, bucket } => {
                cmd.arg("--s3-endpoint")
                    .arg(endpoint)
                    .arg("--s3-bucket")
                    .arg(bucket);
            }
        }
        cmd.args(&self.args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning cairnd")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "cairnd exited with {status} during startup:\n{}",
                    self.log()
                );
            }
            if self.socket().exists() && self.stats().is_ok() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "cairnd did not answer within {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The daemon's `Stats`.
    pub fn stats(&self) -> Result<Stats> {
        let addr = DaemonAddr::parse(&self.addr());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut client = connect(&addr).await?;
            Ok(api::stats(&mut client).await?)
        })
    }

    /// SIGKILL the daemon and reap it (no graceful shutdown: the crash case).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the daemon and wait for its graceful exit (bounded: SIGKILL after 60 s). Returns
    /// whether it exited by itself.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kill the daemon if running and start it again on the same store, socket and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        // A killed daemon leaves its socket file behind; the new one must replace it.
        self.spawn()
    }

    /// A `cairn` command talking to this daemon over its Unix socket.
    pub fn cairn(&self) -> Command {
        cairn_command(&self.addr())
    }
}

/// A `cairn` command talking to the daemon at `addr`, with no ambient `CAIRN_*` configuration.
pub fn cairn_command(addr: &str) -> Command {
    let mut cmd = Command::new(bin_path("cairn"));
    cmd.env_remove("CAIRN_SOCKET")
        .env_remove("CAIRN_TOKEN")
        .env_remove("CAIRN_TOKEN_FILE")
        .arg("--daemon")
        .arg(addr);
    cmd
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
