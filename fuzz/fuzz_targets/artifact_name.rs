//! Fuzz target: artifact and archive name parsing never panics, and what parses round-trips
//! (the property: `cairn_fuzz_props::artifact_name`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_fuzz_props::artifact_name(data));
