//! `cairnd serve`'s lifecycle: its signal handlers are in place before it announces readiness, so a
//! SIGTERM at any moment after "listening" is a graceful shutdown (exit 0, socket removed), never the
//! default action of dying by the signal with the socket file left behind.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use cairn_testkit::bin_path::bin_path;

/// Start `cairnd serve`, send SIGTERM the moment it prints its readiness line, and check the exit.
fn start_and_stop_at_once(dir: &std::path::Path, round: u32) {
    let socket = dir.join(format!("s{round}.sock"));
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
