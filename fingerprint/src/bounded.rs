//! Reading a whole file that a user named, with a size limit: a wrong path (`/dev/zero`, a build
//! log) is refused as soon as the limit is passed, never read to the end or into all memory.

use std::io::{self, Read};
use std::path::Path;

/// Read `path` as UTF-8 text of at most `limit` bytes. `what` names the file in the error ("a
/// topology", "a config file") and `typical` says how large a real one is, so the message tells the
/// user whether they named the wrong file.
pub fn read_text(path: &Path, limit: u64, what: &str, typical: &str) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!(
                "larger than {limit} bytes, the limit for {what} (a real one is {typical}); is \
                 this the right file?"
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_input_is_refused_at_the_limit() {
        let err = read_text(Path::new("/dev/zero"), 1024, "a test file", "~1 KiB").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(err.to_string().contains("limit for a test file"), "{err}");
    }

    #[test]
    fn text_at_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x".repeat(1024)).unwrap();
        assert_eq!(read_text(&p, 1024, "a", "b").unwrap().len(), 1024);
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert_eq!(
            read_text(&p, 1024, "a", "b").unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
