//! Artifact names (`{name}_{component}_{family}`) and archive file names.

use std::fmt;

/// How an archive is compressed, as its file extension says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Compression {
    /// `.tar.zst` (TheRock's default since 2025-12).
    Zstd,
    /// `.tar.xz` (legacy single-stage CI, still accepted).
    Xz,
}

impl Compression {
    /// The file extension including the leading dot: `.tar.zst` or `.tar.xz`.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => ".tar.zst",
            Compression::Xz => ".tar.xz",
        }
    }

    /// The compression a file name's extension names, if any.
    pub fn from_file_name(file_name: &str) -> Option<Compression> {
        if file_name.ends_with(".tar.zst") {
            Some(Compression::Zstd)
        } else if file_name.ends_with(".tar.xz") {
            Some(Compression::Xz)
        } else {
            None
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        })
    }
}
