//! `cairnd serve`'s lifecycle: its signal handlers are in place before it announces readiness, so a
//! SIGTERM at any moment after "listening" is a graceful shutdown (exit 0, socket removed), never the
//! default action of dying by the signal with the socket file left behind.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use cairn_testkit::bin_path::bin_path;

/// Start `cairnd serve`, send SIGTERM the moment it prints its readiness line, and check the exit.
fn start_and_stop_at_once(dir: &std::path::Path, round: u32) {
    let socket = dir.join("run").join(format!("s{round}.sock"));
    let mut child = Command::new(bin_path("cairnd"))
        .arg("serve")
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--local-storage")
        .arg(dir.join("storage"))
        .arg("--socket")
        .arg(&socket)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning cairnd");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr
            .read_line(&mut line)
            .expect("reading cairnd's stderr");
        assert!(
            n > 0,
            "round {round}: cairnd exited before readiness:\n{seen}"
        );
        seen.push_str(&line);
        if line.starts_with("cairnd: listening on unix:") {
            break;
        }
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    // Drain stderr so the daemon never blocks on a full pipe while shutting down.
    let mut rest = String::new();
    for line in stderr.lines().map_while(Result::ok) {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = child.wait().expect("waiting for cairnd");
    assert!(
        status.success(),
        "round {round}: cairnd exited with {status} (signal {:?}) after a SIGTERM right after readiness:\n{seen}{rest}",
        status.signal()
    );
    assert!(
        !socket.exists(),
        "round {round}: the socket `{}` was left behind",
        socket.display()
    );
}

#[test]
fn sigterm_right_after_readiness_is_always_graceful() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..200 {
        start_and_stop_at_once(tmp.path(), round);
    }
}

/// Under systemd (`Type=notify`), `cairnd serve` sends `READY=1` on `NOTIFY_SOCKET` once it serves,
/// and `STOPPING=1` when SIGTERM starts its shutdown. A client connecting right after READY=1 is
/// answered.
#[test]
fn readiness_and_stopping_are_sent_to_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let socket = tmp.path().join("run/cairnd.sock");
    let mut child = Command::new(bin_path("cairnd"))
        .arg("serve")
        .arg("--store")
        .arg(tmp.path().join("store"))
        .arg("--local-storage")
        .arg(tmp.path().join("storage"))
        .arg("--socket")
        .arg(&socket)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning cairnd");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    let status = Command::new(bin_path("cairn"))
        .arg("--daemon")
        .arg(&socket)
        .arg("status")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "a client right after READY=1: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let n = notify.recv(&mut buf).expect("STOPPING=1 within 60 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}
