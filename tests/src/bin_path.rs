//! Locating the workspace's binaries from a test: `CARGO_BIN_EXE_{name}` only exists for the package
//! that defines the binary, so tests in this package look next to the test executable's parent
//! directory (`target/debug/deps/e2e-…` → `target/debug/cairnd`), as ripgrep's `tests/util.rs` does.

use std::path::PathBuf;

/// Path of the workspace binary `name` (e.g. `cairnd`) built alongside the running test.
///
/// # Panics
/// When the binary is not there (build it first: `cargo build -p cairn-daemon`); a test cannot run
/// without it.
pub fn bin_path(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "`{}` not found; run `cargo build -p cairn-daemon` first",
        path.display()
    );
    path
}
