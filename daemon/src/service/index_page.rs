//! The run's `index.html` (`{prefix}/index.html`, what `cairn find` prints as the index URL): a
//! plain, browsable list of every archive the run's job manifests name, with size, SHA-256 and a
//! link, and for an archive the run reused, the run that built it. Pure rendering; `publish.rs`
//! writes it after each job manifest.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::records::{ArchiveRecord, JobManifest};

/// The page for the run at `prefix` whose job manifests are `manifests` (oldest first: a later
/// job's record of the same archive wins, as in `RunTrees`).
pub fn render(prefix: &str, manifests: &[JobManifest]) -> String {
    let mut archives: BTreeMap<&str, &ArchiveRecord> = BTreeMap::new();
    for a in manifests.iter().flat_map(|m| &m.archives) {
        archives.insert(&a.artifact, a);
    }
    let depth = prefix.split('/').filter(|s| !s.is_empty()).count();
    let up = "../".repeat(depth);
    let mut html = String::new();
    let title = escape(prefix);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n</head>\n\
         <body>\n<h1>{title}</h1>\n<p>{} archive(s) from {} job(s), written by Cairn.</p>\n\
         <table>\n<tr><th>archive</th><th>bytes</th><th>sha256</th><th>built by</th></tr>\n",
        archives.len(),
        manifests.len()
    );
    for a in archives.values() {
        let file = a.key.rsplit('/').next().unwrap_or(&a.key);
        let built_by = if a.built_here {
            "this run".to_string()
        } else {
            format!("run {}", escape(&a.reused_from_run_id))
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{}{}\">{}</a></td><td>{}</td><td><code>{}</code></td><td>{built_by}</td></tr>",
            up,
            escape(&a.key),
            escape(file),
            a.compressed_size,
            a.sha256,
        );
    }
    html.push_str("</table>\n</body>\n</html>\n");
    html
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_fingerprint::{Blake3, Platform, Sha256};

    fn record(artifact: &str, key: &str, reused_from: &str) -> ArchiveRecord {
        ArchiveRecord {
            artifact: artifact.into(),
            name: artifact.split('_').next().unwrap().into(),
            component: "lib".into(),
            family: "generic".into(),
            fingerprint: Blake3::of(artifact.as_bytes()),
            key: key.into(),
            sha256: Sha256([7; 32]),
            compressed_size: 42,
            uncompressed_size: 100,
            files: 3,
            tree_digest: Blake3::of(b"tree"),
            built_here: reused_from.is_empty(),
            reused_from_run_id: reused_from.into(),
        }
    }

    fn manifest(archives: Vec<ArchiveRecord>, at: &str) -> JobManifest {
        JobManifest {
            version: crate::records::JOB_MANIFEST_VERSION.into(),
            run: crate::records::RunIdentity {
                repo: "ROCm/TheRock".into(),
                workflow: "ci.yml".into(),
                run_id: "1003".into(),
                commit: "c".repeat(40),
                platform: Platform::Linux,
                status: crate::records::RunStatus::Success,
                head_repo: String::new(),
            },
            stage: "s".into(),
            family: "generic".into(),
            bucket: "b".into(),
            prefix: "1003-linux".into(),
            published_at: at.into(),
            archives,
        }
    }

    #[test]
    fn lists_every_job_archive_with_links_relative_to_the_prefix() {
        let page = render(
            "1003-linux",
            &[
                manifest(
                    vec![record(
                        "a_lib_generic",
                        "1003-linux/a_lib_generic.tar.zst",
                        "",
                    )],
                    "1",
                ),
                manifest(
                    vec![record(
                        "b_lib_generic",
                        "1001-linux/b_lib_generic.tar.zst",
                        "1001",
                    )],
                    "2",
                ),
            ],
        );
        assert!(page.contains("href=\"../1003-linux/a_lib_generic.tar.zst\""));
        assert!(page.contains("href=\"../1001-linux/b_lib_generic.tar.zst\""));
        assert!(page.contains("<td>run 1001</td>"));
        assert!(page.contains("2 archive(s) from 2 job(s)"));
    }
}
