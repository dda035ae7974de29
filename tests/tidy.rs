//! Tidy: rules about the source tree itself, checked with the rest of the suite (rust-analyzer's
//! `tidy.rs` is the model). Each test lists every offender, not just the first.
//!
//! # Rules
//! 1. **Every Rust file starts with a `//!` doc comment** (its first line), test binaries' `main.rs`
//!    included. Walked: every `.rs` file below `proto/`, `fingerprint/`, `daemon/`, `client/`,
//!    `tests/`, `benches/`, `python/` and `fuzz/`, skipping directories named `target`, hidden directories
//!    (`.cache`, `.git`) and the fuzzer's `corpus`, `artifacts` and `coverage`.
//! 2. **Every module is in ARCHITECTURE.md's code map.** A *crate* is a walked directory with a
//!    `Cargo.toml` and a `src/`; its *modules* are the `.rs` files below `src/` other than `lib.rs`,
//!    `main.rs`, `mod.rs` and `src/bin/**` (crate roots and directory-module files), plus every
//!    directory below `src/` (other than `src/bin`) that holds a `.rs` file. A module's *name* is its
//!    path relative to `src/`, with a trailing `/` for a directory: `cas.rs`, `storage/`,
//!    `storage/s3.rs`.
//!
//!    The crate's *section* is the `###` heading of the `## Code map` section whose backticked names
//!    include the crate's directory (`` ### `daemon/` ``), or else the nearest enclosing directory's
//!    (`tests/helpers/` falls back to `` ### `tests/` ``), down to the next heading. A module is
//!    mentioned when its section has a backticked span equal to its name (`` `storage/s3.rs` ``), or,
//!    for a module inside a directory, when one *paragraph* of the section (a bullet item or a run of
//!    non-blank lines) has both a span equal to the directory's name and a span equal to the
//!    module's last component, as in `` - `storage/` — the trait, `local.rs`, `s3.rs` ``. Spans
//!    must match exactly: `` `cas.rs` `` does not mention `store/cas.rs` on its own (only in a
//!    paragraph that also names `` `store/` ``), and prose without backticks mentions nothing. So
//!    give each directory its own bullet, listing its files.
//! 3. **No Python bytecode is tracked:** `git ls-files` lists no `.pyc` file and nothing inside a
//!    `__pycache__` directory (skipped, with a note, outside a git checkout).
//! 4. **The daemon's layers import only downwards:** no file under `daemon/src/service/` names
//!    `crate::server`; none under `store/` names `crate::server` or `crate::service`; none under
//!    `storage/` names those or `crate::store`.
//! 5. **TheRock flag parity is real:** every row of the `## Flag parity` table of
//!    `docs/therock-compatibility.md` names a `cairn SUBCOMMAND ...` equivalent in its third
//!    column, and every `--flag` (and `[POSITIONAL]...`) of that span is in `cairn SUBCOMMAND
//!    --help` (run from the built `cairn` binary).
//! 6. **Every test ARCHITECTURE.md names exists:** a backticked span shaped like a test name
//!    (lowercase `snake_case` with at least three underscores, e.g.
//!    `` `stats_never_show_bytes_gone_without_the_eviction_that_took_them` ``) is defined as
//!    `fn NAME` in a walked Rust file or `def NAME` in a walked Python file, so an invariant never
//!    cites a test that was renamed or deleted.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Top-level directories whose Rust files are checked.
const ROOTS: &[&str] = &[
    "proto",
    "fingerprint",
    "daemon",
    "client",
    "tests",
    "benches",
    "python",
    "fuzz",
];

/// Directory names never walked (besides hidden ones).
const SKIPPED_DIRS: &[&str] = &["target", "corpus", "artifacts", "coverage"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every file below `dir` that `keep` accepts, sorted; skipped directories are not entered.
fn walk(dir: &Path, keep: &dyn Fn(&Path) -> bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_str()) {
                walk(&path, keep, out);
            }
        } else if ft.is_file() && keep(&path) {
            out.push(path);
        }
    }
    out.sort();
}

fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for r in ROOTS {
        walk(
            &root.join(r),
            &|p| p.extension().is_some_and(|e| e == "rs"),
            &mut out,
        );
    }
    out
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn every_rust_file_starts_with_a_doc_comment() {
    let root = workspace_root();
    let files = rust_files(&root);
    assert!(
        files.len() > 50,
        "the walk found only {} files: is {} the workspace?",
        files.len(),
        root.display()
    );
    let offenders: Vec<String> = files
        .iter()
        .filter(|p| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|p| format!("  {}", relative(&root, p)))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} Rust file(s) do not start with a `//!` doc comment saying what the file is for:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 2: the code map.

/// A crate: its directory relative to the workspace (`daemon`, `tests/helpers`) and its modules'
/// names relative to its `src/`.
#[derive(Debug)]
struct Crate {
    dir: String,
    modules: Vec<String>,
}

fn crates(root: &Path) -> Vec<Crate> {
    let mut manifests = Vec::new();
    for r in ROOTS {
        walk(
            &root.join(r),
            &|p| p.file_name().is_some_and(|n| n == "Cargo.toml"),
            &mut manifests,
        );
    }
    let mut out = Vec::new();
    for manifest in manifests {
        let dir = manifest.parent().expect("a manifest has a directory");
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        walk(
            &src,
            &|p| p.extension().is_some_and(|e| e == "rs"),
            &mut files,
        );
        out.push(Crate {
            dir: relative(root, dir),
            modules: module_names(&files.iter().map(|f| relative(&src, f)).collect::<Vec<_>>()),
        });
    }
    out
}

/// The module names (rule 2) of a crate whose `src/` holds `files` (paths relative to `src/`).
fn module_names(files: &[String]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for f in files {
        if f.starts_with("bin/") {
            continue;
        }
        let parts: Vec<&str> = f.split('/').collect();
        for depth in 1..parts.len() {
            names.insert(format!("{}/", parts[..depth].join("/")));
        }
        let file = parts[parts.len() - 1];
        let crate_root = parts.len() == 1 && (file == "lib.rs" || file == "main.rs");
        if !crate_root && file != "mod.rs" {
            names.insert(f.clone());
        }
    }
    names.into_iter().collect()
}

/// One `###` section of the code map: the backticked names in its heading, and its paragraphs,
/// each as the backticked spans it holds.
#[derive(Debug)]
struct Section {
    names: Vec<String>,
    paragraphs: Vec<Vec<String>>,
}

fn spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.trim().to_string())
        .collect()
}

/// The `###` sections of `## Code map` in `markdown`.
fn code_map(markdown: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    let mut in_map = false;
    let mut paragraph: Option<Vec<String>> = None;
    let flush = |sections: &mut Vec<Section>, paragraph: &mut Option<Vec<String>>| {
        if let (Some(p), Some(s)) = (paragraph.take(), sections.last_mut()) {
            s.paragraphs.push(p);
        }
    };
    for line in markdown.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            flush(&mut sections, &mut paragraph);
            in_map = h.trim() == "Code map";
            continue;
        }
        if !in_map {
            continue;
        }
        if let Some(h) = line.strip_prefix("### ") {
            flush(&mut sections, &mut paragraph);
            sections.push(Section {
                names: spans(h),
                paragraphs: Vec::new(),
            });
            continue;
        }
        if line.trim().is_empty() || line.starts_with("- ") || line.starts_with("* ") {
            flush(&mut sections, &mut paragraph);
        }
        if !line.trim().is_empty() {
            paragraph.get_or_insert_with(Vec::new).extend(spans(line));
        }
    }
    flush(&mut sections, &mut paragraph);
    sections
}

/// The section of the crate at `dir` (rule 2): the one naming `dir/`, else its nearest ancestor.
fn section_of<'a>(sections: &'a [Section], dir: &str) -> Option<&'a Section> {
    let mut d = dir;
    loop {
        let wanted = format!("{d}/");
        if let Some(s) = sections.iter().find(|s| s.names.contains(&wanted)) {
            return Some(s);
        }
        d = &d[..d.rfind('/')?];
    }
}

/// Whether `section` mentions the module `name` (rule 2).
fn mentions(section: &Section, name: &str) -> bool {
    if section.paragraphs.iter().flatten().any(|s| s == name) {
        return true;
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let Some(cut) = trimmed.rfind('/') else {
        return false;
    };
    let (parent, last) = (&name[..=cut], &name[cut + 1..]);
    section
        .paragraphs
        .iter()
        .any(|p| p.iter().any(|s| s == parent) && p.iter().any(|s| s == last))
}

/// Every module of `crates` that `markdown`'s code map does not mention, as `crate/src/name`.
fn unmapped(markdown: &str, crates: &[Crate]) -> Vec<String> {
    let sections = code_map(markdown);
    let mut out = Vec::new();
    for c in crates {
        let section = section_of(&sections, &c.dir);
        for m in &c.modules {
            if !section.is_some_and(|s| mentions(s, m)) {
                let why = match section {
                    Some(_) => "",
                    None => " (no `### ` heading of the code map names the crate's directory)",
                };
                out.push(format!("  {}/src/{m}{why}", c.dir));
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_the_code_map() {
    let root = workspace_root();
    let markdown = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let crates = crates(&root);
    let dirs: Vec<&str> = crates.iter().map(|c| c.dir.as_str()).collect();
    for expected in [
        "fingerprint",
        "daemon",
        "client",
        "tests",
        "proto",
        "benches",
    ] {
        assert!(
            dirs.contains(&expected),
            "crate `{expected}` not found in {dirs:?}"
        );
    }
    let offenders = unmapped(&markdown, &crates);
    assert!(
        offenders.is_empty(),
        "{} module(s) are not in ARCHITECTURE.md's `## Code map` (name each by its path relative to \
         its crate's src/ in backticks under the crate's `### ` heading, e.g. `cas.rs`, `storage/`, \
         `storage/s3.rs`; see the rules at the top of tests/tidy.rs):\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn code_map_matching_rule() {
    let markdown = "\
# Title
### `x/`
Not the map: `lost.rs`.

## Code map

### `a/`
Pure: `one.rs` (thing), `two.rs`.
- `store/` — the facade, `cas.rs`, `index.rs`
  continued, `deep/`.
- `other.rs`
- `deep/inner/` and `deep/inner/leaf.rs`

### `tests/` (package)
`gitrepo.rs`
plain words storage/s3.rs

### `b/`, `c/`
`x.rs`

## Next
### `a/`
`never.rs`
";
    let c = |dir: &str, files: &[&str]| Crate {
        dir: dir.into(),
        modules: module_names(&files.iter().map(|f| f.to_string()).collect::<Vec<_>>()),
    };
    let crates = [
        c(
            "a",
            &[
                "lib.rs",
                "main.rs",
                "one.rs",
                "two.rs",
                "store/mod.rs",
                "store/cas.rs",
                "store/index.rs",
                "deep/mod.rs",
                "deep/inner/leaf.rs",
                "other.rs",
                "bin/tool.rs",
                "never.rs",
                "lost.rs",
                "cas.rs",
                "three.rs",
                "other/mod.rs",
                "other/x.rs",
            ],
        ),
        c("tests/helpers", &["lib.rs", "gitrepo.rs", "storage/s3.rs"]),
        c("c", &["x.rs", "sub/main.rs"]),
        c("z", &["lib.rs", "m.rs"]),
    ];
    assert_eq!(
        crates[0].modules,
        [
            "cas.rs",
            "deep/",
            "deep/inner/",
            "deep/inner/leaf.rs",
            "lost.rs",
            "never.rs",
            "one.rs",
            "other.rs",
            "other/",
            "other/x.rs",
            "store/",
            "store/cas.rs",
            "store/index.rs",
            "three.rs",
            "two.rs"
        ]
    );
    assert_eq!(
        unmapped(markdown, &crates),
        [
            "  a/src/lost.rs",
            "  a/src/never.rs",
            "  a/src/other/",
            "  a/src/other/x.rs",
            "  a/src/three.rs",
            // Prose without backticks mentions nothing; `storage/` is not named either.
            "  tests/helpers/src/storage/",
            "  tests/helpers/src/storage/s3.rs",
            // Only lib.rs and main.rs at the top of src/ are crate roots.
            "  c/src/sub/",
            "  c/src/sub/main.rs",
            "  z/src/m.rs (no `### ` heading of the code map names the crate's directory)",
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Rule 3: no Python bytecode in git.

/// The daemon's layers point one way: `server/` (the edge) may use `service/`, `store/` and
/// `storage/`, never the reverse, and `store/` and `storage/` know nothing of the domain above them.
#[test]
fn daemon_layers_import_only_downwards() {
    let root = workspace_root();
    let src = root.join("daemon/src");
    let rules: [(&str, &[&str]); 3] = [
        ("service", &["crate::server"]),
        ("store", &["crate::server", "crate::service"]),
        (
            "storage",
            &["crate::server", "crate::service", "crate::store"],
        ),
    ];
    let mut offenders = Vec::new();
    for (layer, forbidden) in rules {
        let mut files = Vec::new();
        walk(
            &src.join(layer),
            &|p| p.extension().is_some_and(|e| e == "rs"),
            &mut files,
        );
        assert!(!files.is_empty(), "daemon/src/{layer}/ has no source files");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for f in forbidden {
                    if line.contains(f) {
                        offenders.push(format!(
                            "{}:{}: {}",
                            relative(&root, &file),
                            n + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "imports against the daemon's layering (server → service → store/storage):\n  {}",
        offenders.join("\n  ")
    );
}

#[test]
fn no_python_bytecode_is_tracked() {
    let root = workspace_root();
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!("tidy: not a git checkout (or no git); tracked-bytecode check skipped");
            return;
        }
    };
    let offenders: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|p| p.ends_with(".pyc") || p.split('/').any(|c| c == "__pycache__"))
        .map(|p| format!("  {p}"))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} Python bytecode file(s) are tracked in git (`git rm --cached` them; .gitignore has \
         `__pycache__/` and `*.pyc`):\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

/// The cells of a markdown table row: split on `|` not escaped as `\|`, trimmed.
fn table_cells(row: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = row.trim().trim_start_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        cells.push(cur.trim().to_string());
    }
    cells
}

/// The words of a `--help` text: runs of `[A-Za-z0-9_-]`, plus every `[NAME]...` as written.
fn help_words(help: &str) -> BTreeSet<String> {
    let mut words: BTreeSet<String> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    words.extend(help.split_whitespace().map(str::to_string));
    words
}

#[test]
fn every_therock_flag_in_the_parity_table_is_in_cairn_help() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/therock-compatibility.md"))
        .expect("docs/therock-compatibility.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Flag parity"))
        .expect("docs/therock-compatibility.md has a `## Flag parity` section");
    let cairn = cairn_testkit::bin_path::bin_path("cairn");
    let mut helps: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut problems = Vec::new();
    let mut rows = 0;
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        rows += 1;
        let cells = table_cells(line);
        let Some(equivalent) = cells.get(2) else {
            problems.push(format!("row without a Cairn column: {line}"));
            continue;
        };
        let spans: Vec<&str> = equivalent
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("cairn "))
            .collect();
        if spans.is_empty() {
            problems.push(format!(
                "{} {}: no `cairn ...` equivalent",
                cells[0], cells[1]
            ));
        }
        for span in spans {
            let mut words = span.split_whitespace().skip(1);
            let Some(sub) = words.next() else { continue };
            let help = helps.entry(sub.to_string()).or_insert_with(|| {
                let out = Command::new(&cairn)
                    .args([sub, "--help"])
                    .output()
                    .expect("cairn runs");
                assert!(out.status.success(), "cairn {sub} --help failed");
                help_words(&String::from_utf8_lossy(&out.stdout))
            });
            for w in words.filter(|w| w.starts_with("--") || w.starts_with('[')) {
                if !help.contains(w) {
                    problems.push(format!(
                        "{} {}: `cairn {sub} --help` has no `{w}`",
                        cells[0], cells[1]
                    ));
                }
            }
        }
    }
    assert!(
        rows > 50,
        "the parity table has {rows} rows; is it still a table?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A span shaped like a test or function name (rule 6).
fn is_test_like(span: &str) -> bool {
    span.matches('_').count() >= 3
        && span.starts_with(|c: char| c.is_ascii_lowercase())
        && span
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[test]
fn every_test_architecture_md_names_exists() {
    let root = workspace_root();
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let named: BTreeSet<String> = spans(&doc)
        .into_iter()
        .filter(|s| is_test_like(s))
        .collect();
    assert!(
        named.len() >= 10,
        "ARCHITECTURE.md cites its invariants' tests by name; found only {named:?}"
    );
    let mut files = rust_files(&root);
    for r in ROOTS {
        walk(
            &root.join(r),
            &|p| p.extension().is_some_and(|e| e == "py"),
            &mut files,
        );
    }
    let mut defined = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        // The word after every `fn` or `def`, whatever qualifiers come before it.
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "fn" || pair[0] == "def" {
                let name: String = pair[1]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                defined.insert(name);
            }
        }
    }
    let missing: Vec<&String> = named.iter().filter(|n| !defined.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names {} test(s) or function(s) defined nowhere (renamed or deleted? \
         update the doc):\n  {}",
        missing.len(),
        missing
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
