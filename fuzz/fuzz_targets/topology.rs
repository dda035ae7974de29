//! Fuzz target: topology parsing, validation and the graph queries never panic or recurse without
//! bound, whatever the TOML (the property: `cairn_fuzz_props::topology`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_fuzz_props::topology(data));
