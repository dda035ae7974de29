//! Fuzz target: topology parsing, validation and the graph queries never panic or recurse without
//! bound, whatever the TOML.
#![no_main]

use cairn_fingerprint::topology::Topology;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Topology::parse(s) else {
        return;
    };
    let _ = t.validate();
    let _ = t.build_order();
    let _ = t.dependency_graph();
    for a in t.artifacts().iter().take(64) {
        let _ = t.artifact_closure(&a.name);
    }
    for s in t.stages().iter().take(16) {
        let _ = t.inbound(&s.name);
        let _ = t.produced(&s.name);
    }
});
