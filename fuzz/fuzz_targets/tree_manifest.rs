//! Fuzz target: tree manifest decoding (`Tree::from_json_verified`) never panics; a tree it accepts
//! re-encodes to the digest it was checked against (the property: `cairn_fuzz_props::tree_manifest`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_fuzz_props::tree_manifest(data));
