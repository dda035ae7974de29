//! Fuzz target: the archive reader (`read_archive`, what ingest runs) never panics on any input and
//! never hands the sink more bytes than a member declares. The first byte picks the framing: raw
//! zstd/xz bytes, or the rest compressed with zstd here so the fuzzer explores tar headers.
#![no_main]

use std::io::Read;

use cairn_daemon::archive::{Limits, read_archive};
use cairn_fingerprint::{Blake3, Compression};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (bytes, compression) = match mode % 3 {
        0 => (rest.to_vec(), Compression::Zstd),
        1 => (rest.to_vec(), Compression::Xz),
        _ => (
            zstd::encode_all(rest, 1).expect("in-memory zstd"),
            Compression::Zstd,
        ),
    };
    let limits = Limits {
        max_member_size: 1 << 20,
        max_total_size: 4 << 20,
        max_members: 1000,
        max_manifest_size: 64 << 10,
        // Bounded memory: zstd's own default window limit (128 MiB).
        max_zstd_window_log: 27,
    };
    let mut sink = |_: &cairn_fingerprint::tree::RelPath, r: &mut dyn Read, size: u64| {
        let mut buf = Vec::new();
        r.take(size + 1).read_to_end(&mut buf)?;
        assert!(
            buf.len() as u64 <= size,
            "the sink got more than the member declared"
        );
        Ok(Blake3::of(&buf))
    };
    let _ = read_archive(&bytes[..], compression, &limits, &mut sink);
});
