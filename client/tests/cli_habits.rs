//! Shell habits of the real `cairn` binary: completion scripts that the shells accept, `NO_COLOR`
//! honoured on a real pseudo-terminal (where colour would otherwise be used), no colour at all when
//! output is piped, `--help` with examples, TheRock's flag names accepted, `-q`/`-v` exclusive.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};

fn cairn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    for var in ["NO_COLOR", "CLICOLOR", "CLICOLOR_FORCE", "CAIRN_SOCKET"] {
        cmd.env_remove(var);
    }
    cmd.env("TERM", "xterm-256color");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("cairn runs")
}

/// A pseudo-terminal pair: (master, slave).
fn openpty() -> (std::fs::File, std::fs::File) {
    // SAFETY: plain libc calls on fds we own; every return value is checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0);
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        (std::fs::File::from(master), slave)
    }
}

/// Run `cmd` with stdout and stderr on a pseudo-terminal; everything it printed there.
fn on_terminal(cmd: &mut Command) -> String {
    let (mut master, slave) = openpty();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("cairn runs");
    // Our copies of the slave are gone (moved into the Command, dropped with it below), so reading
    // the master ends (EIO) once the child exits.
    drop(std::mem::replace(cmd, Command::new("true")));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    child.wait().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

const ESC: char = '\x1b';

#[test]
fn colour_on_a_terminal_unless_no_color() {
    // On a terminal, help and our own `error:` are coloured: the pty really is one.
    let help = on_terminal(cairn().arg("--help"));
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains(ESC), "no colour on a terminal:\n{help}");
    let unreachable = ["--daemon", "unix:/nonexistent/cairnd.sock", "status"];
    let err = on_terminal(cairn().args(unreachable));
    assert!(err.contains("\x1b[1;31merror:\x1b[0m"), "{err:?}");

    // NO_COLOR: the same output without a single escape sequence.
    let help = on_terminal(cairn().arg("--help").env("NO_COLOR", "1"));
    assert!(
        help.contains("Examples:") && !help.contains(ESC),
        "{help:?}"
    );
    let err = on_terminal(cairn().args(unreachable).env("NO_COLOR", "1"));
    assert!(
        err.contains("cairn: error: ") && !err.contains(ESC),
        "{err:?}"
    );
    let usage = on_terminal(cairn().arg("--no-such-flag").env("NO_COLOR", "1"));
    assert!(
        usage.contains("--no-such-flag") && !usage.contains(ESC),
        "{usage:?}"
    );
}

#[test]
fn no_colour_when_piped() {
    for args in [
        &["--help"][..],
        &["--no-such-flag"],
        &["--daemon", "unix:/nonexistent/cairnd.sock", "status"],
    ] {
        let o = run(cairn().args(args));
        let all = [o.stdout, o.stderr].concat();
        assert!(!all.is_empty());
        assert!(
            !all.contains(&0x1b),
            "ANSI escape in piped output of {args:?}"
        );
    }
}

#[test]
fn completion_scripts_load_in_their_shells() {
    for (shell, marker) in [
        ("bash", "complete -F _cairn"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let o = run(cairn().args(["completions", shell]));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(script.contains(marker), "{shell} script lacks `{marker}`");
        for sub in ["bootstrap", "fetch", "push", "completions"] {
            assert!(
                script.contains(sub),
                "{shell} script does not complete `{sub}`"
            );
        }
        // Long flags and TheRock's aliases are completed too.
        for flag in ["amdgpu-families", "exclude-components", "run-github-repo"] {
            assert!(
                script.contains(flag),
                "{shell} script does not complete `--{flag}`"
            );
        }
    }
    // bash itself must accept the script and register the completion function.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cairn.bash");
    let o = run(cairn().args(["completions", "bash"]));
    std::fs::write(&script, o.stdout).unwrap();
    let o = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p cairn",
        script.display()
    )));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("_cairn"));

    let o = run(cairn().args(["completions", "tcsh"]));
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn long_help_has_examples_short_help_does_not() {
    for sub in [
        "bootstrap",
        "fetch",
        "push",
        "import",
        "status",
        "gc",
        "layout",
    ] {
        let long = run(cairn().args([sub, "--help"]));
        let long = String::from_utf8(long.stdout).unwrap();
        assert!(
            long.contains("Examples:\n") && long.contains(&format!("cairn {sub}")),
            "`cairn {sub} --help` lacks examples:\n{long}"
        );
        let short = String::from_utf8(run(cairn().args([sub, "-h"])).stdout).unwrap();
        assert!(
            !short.contains("Examples:"),
            "`cairn {sub} -h` should stay short"
        );
    }
    let top = String::from_utf8(run(cairn().arg("--help")).stdout).unwrap();
    for section in ["Environment:", "NO_COLOR", "CAIRN_SOCKET", "Exit status:"] {
        assert!(top.contains(section), "`cairn --help` lacks {section}");
    }
}

#[test]
fn therock_flag_names_and_quiet_verbose() {
    // artifact_manager's --run-github-repo means --repo; the run's layout is the same either way.
    let topo = concat!(env!("CARGO_MANIFEST_DIR"), "/../BUILD_TOPOLOGY.toml");
    let layout = |flag: &str| {
        let o = run(cairn().args([
            "--topology",
            topo,
            "layout",
            "--run-id",
            "123",
            "--platform",
            "linux",
            flag,
            "ROCm/rocm-libraries",
        ]));
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let via_alias = layout("--run-github-repo");
    assert_eq!(via_alias, layout("--repo"));
    assert!(
        via_alias.contains("ROCm-rocm-libraries/123-linux"),
        "{via_alias}"
    );

    // -q and -v contradict each other: a usage error, not a silent choice.
    let o = run(cairn().args(["-q", "-v", "status"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}
