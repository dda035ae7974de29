//! Fuzz target: artifact and archive name parsing never panics, and what parses round-trips.
#![no_main]

use cairn_fingerprint::names::{ArchiveName, ArtifactName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ArtifactName::parse(s) {
        let again = ArtifactName::parse(&name.to_string()).expect("a parsed name re-parses");
        assert_eq!(again, name);
    }
    if let Ok(archive) = ArchiveName::parse(s) {
        assert_eq!(archive.to_string(), s, "an archive name prints as parsed");
    }
});
