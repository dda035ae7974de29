//! A TheRock-shaped git checkout built from scratch: a superproject holding `BUILD_TOPOLOGY.toml`
//! and one real git submodule per submodule the topology's source sets name, each backed by a local
//! "upstream" repository. Tests and the demo move submodules to make fingerprints change the way a
//! real commit would.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A generated superproject with its upstream repositories.
#[derive(Debug)]
pub struct Checkout {
    /// The superproject work tree (the "TheRock" checkout).
    pub root: PathBuf,
    /// Directory holding one upstream repository per submodule.
    pub upstreams: PathBuf,
    /// Submodule directory names, as the topology spells them.
    pub submodules: Vec<String>,
}

/// Run git with a fixed identity and local-file submodules allowed; fail with its stderr
/// ([`cairn_test_helpers::gitrepo::try_git`]).
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(cairn_test_helpers::gitrepo::try_git(dir, args)?)
}

/// Submodule names listed by the topology's `source_sets`, sorted and de-duplicated.
pub fn topology_submodules(topology_toml: &str) -> Result<Vec<String>> {
    let value: toml::Value = toml::from_str(topology_toml).context("parsing topology")?;
    let mut subs: Vec<String> = value
        .get("source_sets")
        .and_then(|s| s.as_table())
        .into_iter()
        .flat_map(|t| t.values())
        .filter_map(|set| set.get("submodules").and_then(|s| s.as_array()))
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    subs.sort();
    subs.dedup();
    Ok(subs)
}

impl Checkout {
    /// Create the upstreams and the superproject under `dir` for `topology` (the file's text).
    pub fn create(dir: &Path, topology: &str) -> Result<Checkout> {
        let upstreams = dir.join("upstream");
        let root = dir.join("TheRock");
        std::fs::create_dir_all(&upstreams)?;
        std::fs::create_dir_all(&root)?;
        let submodules = topology_submodules(topology)?;
        for sub in &submodules {
            let up = upstreams.join(sub);
            std::fs::create_dir_all(&up)?;
            git(&up, &["init", "-q"])?;
            std::fs::write(
                up.join("README.md"),
                format!("{sub} upstream, revision 1\n"),
            )?;
            git(&up, &["add", "-A"])?;
            git(&up, &["commit", "-q", "-m", "initial"])?;
        }
        git(&root, &["init", "-q"])?;
        std::fs::write(root.join("BUILD_TOPOLOGY.toml"), topology)?;
        std::fs::create_dir_all(root.join("cmake"))?;
        std::fs::write(
            root.join("cmake/therock_globals.cmake"),
            "# global build inputs\n",
        )?;
        std::fs::create_dir_all(root.join("build_tools"))?;
        std::fs::write(
            root.join("build_tools/build_topology.py"),
            "# topology tooling\n",
        )?;
        std::fs::write(
            root.join("CMakeLists.txt"),
            "cmake_minimum_required(VERSION 3.25)\n",
        )?;
        for sub in &submodules {
            let url = upstreams.join(sub);
            git(
                &root,
                &[
                    "submodule",
                    "add",
                    "-q",
                    url.to_str().context("non-UTF-8 temp path")?,
                    sub,
                ],
            )?;
        }
        git(&root, &["add", "-A"])?;
        git(
            &root,
            &["commit", "-q", "-m", "TheRock-shaped superproject"],
        )?;
        Ok(Checkout {
            root,
            upstreams,
            submodules,
        })
    }

    /// Commit a change in `sub`'s upstream and move the superproject's submodule to it (one commit).
    pub fn bump_submodule(&self, sub: &str, note: &str) -> Result<String> {
        let up = self.upstreams.join(sub);
        std::fs::write(up.join("CHANGES.md"), format!("{note}\n"))?;
        git(&up, &["add", "-A"])?;
        git(&up, &["commit", "-q", "-m", note])?;
        let path = self.root.join(sub);
        git(&path, &["pull", "-q", "origin", "main"])?;
        git(&self.root, &["add", sub])?;
        git(
            &self.root,
            &["commit", "-q", "-m", &format!("bump {sub}: {note}")],
        )?;
        self.head()
    }

    /// The superproject's HEAD commit.
    pub fn head(&self) -> Result<String> {
        git(&self.root, &["rev-parse", "HEAD"])
    }

    /// Clone the superproject (with submodules) to `dest`, e.g. to prove path independence.
    pub fn clone_to(&self, dest: &Path) -> Result<()> {
        let parent = dest.parent().context("clone destination has no parent")?;
        std::fs::create_dir_all(parent)?;
        git(
            parent,
            &[
                "clone",
                "-q",
                "--recurse-submodules",
                self.root.to_str().context("non-UTF-8 path")?,
                dest.to_str().context("non-UTF-8 path")?,
            ],
        )?;
        Ok(())
    }
}
