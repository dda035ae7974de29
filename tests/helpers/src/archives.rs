//! Archive writers for tests: raw ustar members written byte by byte (the `tar` crate's builder
//! refuses most hostile headers on purpose), tar streams, in-memory zstd/xz (feature `compress`),
//! and TheRock-shaped archives packed or unpacked with the system `tar`, as a user would.

use std::path::Path;
use std::process::Command;

/// One raw ustar member named by raw bytes: mode 0644, owner 0:0, mtime 1 610 612 736 (octal
/// `14000000000`). `size` overrides the size field (written base-256 when it does not fit in
/// octal), for headers that lie about their content; device members (`3`, `4`) get major 1, minor 3
/// (`/dev/null`). The data is padded to a 512-byte block.
///
/// # Panics
/// When `name` is longer than 100 bytes or `link` longer than 100 bytes.
pub fn ustar_member(
    name: &[u8],
    typeflag: u8,
    link: impl AsRef<[u8]>,
    data: &[u8],
    size: Option<u64>,
) -> Vec<u8> {
    let link = link.as_ref();
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    let size = size.unwrap_or(data.len() as u64);
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(b"14000000000\0");
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if typeflag == b'3' || typeflag == b'4' {
        // Device major/minor (1, 3: /dev/null).
        h[329..337].copy_from_slice(b"0000001\0");
        h[337..345].copy_from_slice(b"0000003\0");
    }
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A regular-file member (typeflag `0`).
pub fn ustar_file(name: &str, data: &[u8]) -> Vec<u8> {
    ustar_member(name.as_bytes(), b'0', "", data, None)
}

/// A tar stream: the members, then the two zero blocks that end an archive.
pub fn tar_stream(members: &[Vec<u8>]) -> Vec<u8> {
    let mut out = members.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `data` as one zstd frame at `level`, without the frame checksum.
#[cfg(feature = "compress")]
pub fn zstd_bytes(data: &[u8], level: i32) -> Vec<u8> {
    zstd::encode_all(data, level).expect("in-memory zstd")
}

/// `data` as one zstd frame at `level` with the frame checksum, as the `zstd` CLI and Cairn's own
/// archives write it.
#[cfg(feature = "compress")]
pub fn zstd_bytes_checked(data: &[u8], level: i32) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).expect("zstd encoder");
    enc.include_checksum(true).expect("zstd checksum flag");
    std::io::Write::write_all(&mut enc, data).expect("in-memory zstd");
    enc.finish().expect("in-memory zstd")
}

/// `data` as an xz stream at `preset`.
#[cfg(feature = "compress")]
pub fn xz_bytes(data: &[u8], preset: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = liblzma::write::XzEncoder::new(&mut out, preset);
    std::io::Write::write_all(&mut enc, data).expect("in-memory xz");
    enc.finish().expect("in-memory xz");
    out
}

/// Pack the exploded artifact `dir` like TheRock's `fileset_tool.py artifact-archive`, with the
/// system `find`, `tar` and `zstd`: `artifact_manifest.txt` first, then every entry below each
/// relpath (not the relpath directories themselves), into the zstd archive `out`. The member list
/// is kept next to `out` (`out` with the extension `list`).
///
/// # Panics
/// When a tool is missing or fails.
pub fn pack_with_system_tar(dir: &Path, relpaths: &[&str], out: &Path) {
    let mut list = String::from("artifact_manifest.txt\n");
    for r in relpaths {
        let found = Command::new("find")
            .arg(r)
            .arg("-mindepth")
            .arg("1")
            .current_dir(dir)
            .output()
            .expect("run find");
        assert!(found.status.success(), "find {r} in {}", dir.display());
        list.push_str(std::str::from_utf8(&found.stdout).expect("UTF-8 paths"));
    }
    let list_file = out.with_extension("list");
    std::fs::write(&list_file, list).expect("write the member list");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' --no-recursion -cf - -T '{}' | zstd -q -f -o '{}'",
            dir.display(),
            list_file.display(),
            out.display()
        ))
        .status()
        .expect("run tar | zstd");
    assert!(status.success(), "packing {} failed", out.display());
}

/// Extract `archive` into `dest` (created) with the system `tar`, permissions kept, decompressing
/// with `decompressor` (e.g. `zstd -d --long=31`, `xz -d`).
///
/// # Panics
/// When `tar` fails: the archive under test must be one `tar` accepts.
pub fn untar_with_system_tar(archive: &Path, decompressor: &str, dest: &Path) {
    std::fs::create_dir_all(dest).expect("create extraction dir");
    let out = Command::new("tar")
        .arg("--use-compress-program")
        .arg(decompressor)
        .arg("-xpf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "tar -x {} failed: {}",
        archive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_valid_ustar_blocks() {
        let m = ustar_file("a/b.txt", b"hello");
        assert_eq!(m.len(), 1024);
        assert_eq!(&m[..7], b"a/b.txt");
        assert_eq!(&m[124..136], b"00000000005\0");
        assert_eq!(&m[257..263], b"ustar\0");
        assert_eq!(&m[512..517], b"hello");
        let sum: u32 = m[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u32
                }
            })
            .sum();
        assert_eq!(&m[148..156], format!("{sum:06o}\0 ").as_bytes());
        let huge = ustar_member(b"x", b'0', "", b"", Some(1 << 40));
        assert_eq!(huge[124], 0x80);
        assert_eq!(&huge[128..136], &(1u64 << 40).to_be_bytes());
        let t = tar_stream(std::slice::from_ref(&m));
        assert_eq!(t.len(), m.len() + 1024);
    }
}
