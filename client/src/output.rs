//! Output: the single place that writes to stdout and stderr, and the exit status contract.
//!
//! Human output goes to stdout, one item per line; `--json` prints exactly one JSON document on
//! stdout and nothing else there. Notes and summaries go to stderr and are silenced by `--quiet`.
//! Errors print as `cairn: error: ...` followed by one `caused by: ...` line per source.
//!
//! Colour (only `error:` in red, and clap's help and usage errors) is used only when the stream is a
//! terminal, `NO_COLOR` is unset or empty (no-color.org) and `TERM` is not `dumb`; clap applies the
//! same rule to its own output.

use std::io::{self, Write};

/// How `cairn` exits: 0 the command succeeded, 1 it ran and the answer is "no" (validation problems,
/// missing artifacts), 2 it could not run (bad arguments, unreadable input, I/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exit code 0.
    Success,
    /// Exit code 1.
    Failure,
    /// Exit code 2.
    Error,
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        std::process::ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Error => 2,
        })
    }
}

/// Writes results (stdout) and notes (stderr) according to `--json`, `--quiet` and `-v`.
pub struct Printer {
    json: bool,
    quiet: bool,
    verbose: u8,
    out: io::BufWriter<io::Stdout>,
}

impl Printer {
    /// A printer over the process's stdout.
    pub fn new(json: bool, quiet: bool, verbose: u8) -> Printer {
        Printer {
            json,
            quiet,
            verbose,
            out: io::BufWriter::new(io::stdout()),
        }
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        self.json
    }

    /// One line of human output on stdout.
    pub fn line(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.out, "{line}")
    }

    /// Names: one per line, or a JSON array with `--json`. The caller decides the order.
    pub fn names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        let names: Vec<&str> = names.into_iter().collect();
        if self.json {
            self.json_value(&names)
        } else {
            for n in names {
                self.line(n)?;
            }
            Ok(())
        }
    }

    /// One JSON document on stdout (pretty-printed, newline-terminated).
    pub fn json_value<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> anyhow::Result<()> {
        serde_json::to_writer_pretty(&mut self.out, value)?;
        writeln!(self.out)?;
        Ok(())
    }

    /// A note on stderr (hidden by `--quiet`).
    pub fn note(&mut self, msg: &str) {
        if !self.quiet {
            let _ = self.out.flush();
            eprintln!("{msg}");
        }
    }

    /// A detail on stderr, shown only with `-v`.
    pub fn detail(&mut self, msg: &str) {
        if self.verbose > 0 && !self.quiet {
            let _ = self.out.flush();
            eprintln!("{msg}");
        }
    }

    /// A problem on stderr: part of the answer, so `--quiet` does not hide it.
    pub fn problem(&mut self, msg: &str) {
        let _ = self.out.flush();
        eprintln!("cairn: {msg}");
    }

    /// Flush stdout (errors such as a closed pipe surface here).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// Print an error and its causes on stderr.
pub fn print_error(err: &anyhow::Error) {
    let (red, reset) = if color_stderr() {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut stderr = io::stderr().lock();
    let mut shown = err.to_string();
    let _ = writeln!(stderr, "cairn: {red}error:{reset} {shown}");
    // Each cause once: many errors already quote their source in their own message.
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !shown.contains(&cause) {
            let _ = writeln!(stderr, "  caused by: {cause}");
            shown = cause;
        }
    }
}

/// Whether to colour what goes to stderr (see the module doc for the rule).
pub fn color_stderr() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal() && color_allowed(|k| std::env::var_os(k))
}

/// The environment half of the colour rule: `NO_COLOR` unset or empty, `TERM` not `dumb`.
fn color_allowed(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    get("NO_COLOR").is_none_or(|v| v.is_empty()) && get("TERM").is_none_or(|t| t != "dumb")
}

/// Whether an error is (caused by) writing to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|e| e.io_error_kind())
                .is_some_and(|k| k == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::color_allowed;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_color_and_dumb_terminals_turn_colour_off() {
        assert!(color_allowed(env(&[])));
        assert!(color_allowed(env(&[("TERM", "xterm-256color")])));
        assert!(
            color_allowed(env(&[("NO_COLOR", "")])),
            "empty NO_COLOR is unset"
        );
        assert!(!color_allowed(env(&[("NO_COLOR", "1")])));
        assert!(!color_allowed(env(&[("TERM", "dumb")])));
    }
}
