//! Fuzz target: tree manifest decoding (`Tree::from_json_verified`) never panics; a tree it accepts
//! re-encodes to the digest it was checked against.
#![no_main]

use cairn_fingerprint::{Blake3, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Check against the digest of the bytes themselves: accepted only if canonical.
    let digest = Blake3::of(data);
    if let Ok(tree) = Tree::from_json_verified(data, &digest) {
        assert_eq!(tree.digest(), digest);
    }
    // And against an unrelated digest: must never be accepted unless the content matches.
    let other = Blake3::of(b"other");
    if let Ok(tree) = Tree::from_json_verified(data, &other) {
        assert_eq!(tree.digest(), other);
    }
});
