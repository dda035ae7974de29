//! Fuzz target: the archive reader (`read_archive`, what ingest runs) never panics on any input and
//! never hands the sink more bytes than a member declares. The first byte picks the framing: raw
//! zstd/xz bytes, or the rest compressed with zstd so the fuzzer explores tar headers (the property:
//! `cairn_fuzz_props::tar_ingest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_fuzz_props::tar_ingest(data));
