//! systemd socket activation, for real: `cairnd serve` is started the way systemd starts it from
//! `cairnd.socket` — an already bound and listening Unix socket as fd 3, `LISTEN_FDS=1` and
//! `LISTEN_PID` set to the daemon's own pid — and must serve gRPC on that socket without binding its
//! own. Activation variables meant for another process must be ignored.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use cairn_client::connect::{DaemonAddr, connect};
use cairn_proto::v1::StatsRequest;
use cairn_testkit::bin_path::bin_path;

/// Common `cairnd serve` arguments: a private store and local storage under `dir`, and `--socket` set
/// to `own` (the socket the daemon binds when it is *not* activated).
fn serve_command(program: &Path, dir: &Path, own: &Path) -> Vec<String> {
    vec![
        program.display().to_string(),
        "serve".into(),
        "--store".into(),
        dir.join("store").display().to_string(),
        "--local-storage".into(),
        dir.join("storage").display().to_string(),
        "--socket".into(),
        own.display().to_string(),
    ]
}

/// Make `listener` fd 3 in the child, as systemd does. Only async-signal-safe calls after fork.
fn pass_as_fd3(cmd: &mut Command, listener: &std::os::unix::net::UnixListener) {
    let fd = listener.as_raw_fd();
    // SAFETY: the closure only calls dup2/fcntl, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself would keep close-on-exec; clear it instead.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Read the child's stderr until a line starting with `prefix` (returned); keep collecting the rest
/// into the returned buffer on a thread so the child never blocks on a full pipe.
fn wait_for_line(child: &mut Child, prefix: &str) -> (String, Arc<Mutex<String>>) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let all = Arc::new(Mutex::new(String::new()));
    let found = loop {
        match lines.next() {
            Some(Ok(line)) => {
                all.lock().unwrap().push_str(&format!("{line}\n"));
                if line.starts_with(prefix) {
                    break line;
                }
            }
            _ => panic!(
                "cairnd exited before printing `{prefix}`; stderr:\n{}",
                all.lock().unwrap()
            ),
        }
    };
    let rest = all.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            rest.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    (found, all)
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait().expect("waiting for cairnd")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_grpc_on_the_socket_passed_as_fd_3() {
    let tmp = tempfile::tempdir().unwrap();
    let activated = tmp.path().join("activated.sock");
    let own = tmp.path().join("run/own.sock");
    let listener = std::os::unix::net::UnixListener::bind(&activated).unwrap();

    // `LISTEN_PID` must be the daemon's pid, known only after fork: a shell exports its own pid and
    // execs cairnd, which keeps that pid (what `systemd-socket-activate` achieves with its own exec).
    let argv = serve_command(&bin_path("cairnd"), tmp.path(), &own);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
        .args(&argv)
        .env("LISTEN_FDS", "1")
        .env_remove("CAIRN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pass_as_fd3(&mut cmd, &listener);
    let mut child = cmd.spawn().unwrap();
    // Only the daemon holds the socket now, as with systemd after it hands the fd over.
    drop(listener);
    let (line, stderr) = wait_for_line(&mut child, "cairnd: listening on unix:");
    assert_eq!(
        line,
        format!(
            "cairnd: listening on unix:{} (socket-activated)",
            activated.display()
        )
    );

    let mut client = connect(&DaemonAddr::Unix(activated.clone()))
        .await
        .expect("connecting to the activated socket");
    let stats = client.stats(StatsRequest {}).await.unwrap().into_inner();
    assert_eq!((stats.blobs, stats.store_bytes), (0, 0));
    assert!(
        !own.exists(),
        "an activated cairnd bound its own socket `{}` too",
        own.display()
    );

    let status = stop(child);
    assert!(
        status.success(),
        "cairnd exited with {status}; stderr:\n{}",
        stderr.lock().unwrap()
    );
    assert!(
        activated.exists(),
        "the activated socket belongs to systemd; cairnd must not remove it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_variables_for_another_pid_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let passed = tmp.path().join("passed.sock");
    let own = tmp.path().join("run/own.sock");
    let listener = std::os::unix::net::UnixListener::bind(&passed).unwrap();

    // Variables inherited from a parent that was itself activated name the parent's pid.
    let argv = serve_command(&bin_path("cairnd"), tmp.path(), &own);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env_remove("CAIRN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    pass_as_fd3(&mut cmd, &listener);
    let mut child = cmd.spawn().unwrap();
    let (line, stderr) = wait_for_line(&mut child, "cairnd: listening on unix:");
    assert_eq!(line, format!("cairnd: listening on unix:{}", own.display()));

    let mut client = connect(&DaemonAddr::Unix(own.clone())).await.unwrap();
    client.stats(StatsRequest {}).await.unwrap();

    let status = stop(child);
    assert!(
        status.success(),
        "cairnd exited with {status}; stderr:\n{}",
        stderr.lock().unwrap()
    );
    assert!(!own.exists(), "cairnd removes the socket it bound itself");
}

/// The shipped service files agree with each other and with the daemon: the sample configuration
/// parses and validates, names the socket `cairnd.socket` listens on, and the service reads it.
#[test]
fn packaged_units_and_sample_config_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let config: cairn_daemon::config::Config = toml::from_str(&read("cairnd.toml"))
        .unwrap_or_else(|e| panic!("packaging/systemd/cairnd.toml: {e}"));
    config.validate().unwrap();

    let value = |unit: &str, key: &str| -> String {
        read(unit)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{unit} has no {key}="))
            .to_string()
    };
    assert_eq!(
        Path::new(&value("cairnd.socket", "ListenStream")),
        config.socket
    );
    assert_eq!(value("cairnd.socket", "SocketMode"), "0660");
    assert_eq!(value("cairnd.socket", "SocketGroup"), "cairn");
    assert!(
        value("cairnd.service", "ExecStart").ends_with("serve --config /etc/cairn/cairnd.toml"),
        "cairnd.service must start `cairnd serve` with the sample config's path"
    );
    assert_eq!(value("cairnd.service", "Requires"), "cairnd.socket");
    // The store and every local backend must be writable under ProtectSystem=strict.
    let writable = value("cairnd.service", "ReadWritePaths");
    let under = |p: &Path| writable.split_whitespace().any(|w| p.starts_with(w));
    assert!(
        under(&config.store_dir),
        "{} not in ReadWritePaths",
        config.store_dir.display()
    );
    for s in config.storage.iter().filter_map(|s| s.root.as_deref()) {
        assert!(under(s), "{} not in ReadWritePaths", s.display());
    }
}
