//! The materialization plan: every entry of every tree mapped to its destination path under the
//! chosen [`Layout`], merged into one map, with hostile and conflicting entries refused before
//! anything touches the disk.
//!
//! Vocabulary: a *destination path* is a `/`-separated path relative to the destination directory,
//! as bytes (a tree name need not be UTF-8, and is written exactly);
//! an *area* is a directory the materialization owns outright (a stage relpath in bootstrap layout,
//! `artifacts/{artifact}` in plain layout): foreign content found there is removed, as TheRock's
//! `rmtree` before extraction does. Flatten layout has no areas; it only ever replaces what it writes.

use std::collections::{BTreeMap, HashMap};

use cairn_fingerprint::Blake3;
use cairn_fingerprint::tree::{
    ARTIFACT_MANIFEST, EntryKind, LinkTarget, RelPath, Tree, TreeEntry, escape_bytes,
};

use super::{Layout, MaterializeItem, STATE_FILE, TreeProblem};

/// What will exist at one destination path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    /// A directory; `mode` is `None` for a parent that no tree lists (created with the default mode).
    Dir { mode: Option<u32> },
    /// A regular file with the content of a blob.
    File {
        blake3: Blake3,
        size: u64,
        mode: u32,
    },
    /// A symbolic link, target as written in the tree.
    Symlink { target: LinkTarget },
    /// A hard link to the planned file at destination path `target`; `blake3`/`size`/`mode` are the
    /// content it must have, used when `target` ended up holding something else.
    Hardlink {
        target: Vec<u8>,
        blake3: Blake3,
        size: u64,
        mode: u32,
    },
    /// An empty `{relpath}.prebuilt` marker (bootstrap layout).
    Marker { area: usize },
}

impl Node {
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    fn describe(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "directory",
            Node::File { .. } => "file",
            Node::Symlink { .. } => "symlink",
            Node::Hardlink { .. } => "hardlink",
            Node::Marker { .. } => "marker",
        }
    }
}

/// One planned destination path.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub node: Node,
    /// Index of the item (artifact) that put it there; the last one wins for files.
    pub artifact: usize,
    /// Index into [`Plan::areas`] when the path is an area or lies inside one.
    pub area: Option<usize>,
}

/// The merged plan for one run.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Destination path → what goes there. Sorted, so parents come before their children.
    pub entries: BTreeMap<Vec<u8>, Planned>,
    /// Area destination paths, in first-seen order (UTF-8: stage relpaths, `artifacts/{artifact}`).
    pub areas: Vec<String>,
}

impl Plan {
    /// Map `items` under `layout`, returning every problem found rather than the first.
    pub(crate) fn build(
        items: &[MaterializeItem],
        layout: Layout,
    ) -> Result<Plan, Vec<TreeProblem>> {
        let mut b = Builder {
            plan: Plan::default(),
            layout,
            area_index: HashMap::new(),
            problems: Vec::new(),
            items,
        };
        for (i, item) in items.iter().enumerate() {
            b.add_item(i, item, layout);
        }
        b.check_symlinks_resolved(layout);
        if b.problems.is_empty() {
            Ok(b.plan)
        } else {
            Err(b.problems)
        }
    }

    /// The area containing destination path `p`, if any (by lookup of the planned entry).
    pub(crate) fn area_of(&self, p: &[u8]) -> Option<usize> {
        if let Some(e) = self.entries.get(p) {
            return e.area;
        }
        self.areas.iter().position(|a| {
            let a = a.as_bytes();
            p == a || (p.starts_with(a) && p[a.len()] == b'/')
        })
    }
}

/// A destination path for messages: `\xNN` for bytes that are not UTF-8.
pub(crate) fn shown(p: &[u8]) -> String {
    escape_bytes(p).to_string()
}

/// `{a}/{b}` of byte paths.
pub(crate) fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    [a, b"/", b].concat()
}

/// The parent of a destination path and its last component, or `None` for a top-level name.
pub(crate) fn split_parent(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = p.iter().rposition(|b| *b == b'/')?;
    Some((&p[..slash], &p[slash + 1..]))
}

/// The `/`-separated components of a destination path.
pub(crate) fn components(p: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    p.split(|b| *b == b'/')
}

struct Builder<'a> {
    plan: Plan,
    layout: Layout,
    area_index: HashMap<Vec<u8>, usize>,
    problems: Vec<TreeProblem>,
    items: &'a [MaterializeItem],
}

/// The mode a file whose archive mode is `mode` gets, as TheRock's tools give it (the one rule of
/// destination modes). Bootstrap and flatten follow `ArtifactPopulator`: the file is created with the
/// default mode (0666 less the umask) and gains the archive's execute bits, so a `0444` CMake config
/// becomes `0644` and a `0700` helper `0744`. Plain follows `tarfile.extractall(filter="tar")`: the
/// archive's mode without setuid, setgid, sticky and group/other write.
pub(crate) fn file_mode(layout: Layout, mode: u32) -> u32 {
    match layout {
        Layout::Plain => mode & 0o755,
        Layout::Bootstrap | Layout::Flatten => {
            // An unreadable umask reads as 0777; a file must still be readable: take the usual 022.
            let umask = match super::copy::process_umask() {
                0o777 => 0o022,
                u => u,
            };
            (0o666 & !umask) | (mode & 0o111)
        }
    }
}

/// The mode of a directory the archive lists: plain keeps it (as `tarfile` does, less group/other
/// write); bootstrap and flatten create directories with the default mode (`mkdir`), as
/// `ArtifactPopulator` does.
fn dir_mode(layout: Layout, mode: u32) -> Option<u32> {
    match layout {
        Layout::Plain => Some(mode & 0o755),
        Layout::Bootstrap | Layout::Flatten => None,
    }
}

/// True when a single path component is safe to use as a directory name.
fn is_plain_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.contains('/')
        && !s.contains('\\')
        && !s.contains('\0')
}

impl Builder<'_> {
    fn name(&self, i: usize) -> String {
        self.items[i].artifact.clone()
    }

    fn area(&mut self, path: &str) -> usize {
        if let Some(&i) = self.area_index.get(path.as_bytes()) {
            return i;
        }
        self.plan.areas.push(path.to_string());
        self.area_index
            .insert(path.as_bytes().to_vec(), self.plan.areas.len() - 1);
        self.plan.areas.len() - 1
    }

    fn add_item(&mut self, i: usize, item: &MaterializeItem, layout: Layout) {
        let tree = &*item.tree;
        match layout {
            Layout::Plain => {
                if !is_plain_component(&item.artifact) {
                    self.problems.push(TreeProblem::BadArtifactName {
                        artifact: item.artifact.clone(),
                    });
                    return;
                }
                let root = format!("artifacts/{}", item.artifact);
                let area = self.area(&root);
                self.insert(
                    root.clone().into_bytes(),
                    Node::Dir { mode: None },
                    i,
                    Some((area, root.len())),
                );
                for e in &tree.entries {
                    let dest = join(root.as_bytes(), e.path.as_bytes());
                    self.add_entry(
                        i,
                        tree,
                        e,
                        dest,
                        e.path.as_bytes(),
                        Some((area, root.len())),
                        |p| Some(join(root.as_bytes(), p)),
                    );
                }
            }
            Layout::Bootstrap | Layout::Flatten => {
                let bootstrap = layout == Layout::Bootstrap;
                if bootstrap {
                    let bad: Vec<TreeProblem> = tree
                        .manifest
                        .iter()
                        .filter_map(|r| {
                            let reason = match r.to_str() {
                                Some(r) => relpath_problem(r),
                                None => Some("a stage relpath is text (UTF-8)"),
                            };
                            reason.map(|reason| TreeProblem::BadRelpath {
                                artifact: self.name(i),
                                relpath: r.to_string(),
                                reason,
                            })
                        })
                        .collect();
                    if !bad.is_empty() {
                        self.problems.extend(bad);
                        return;
                    }
                    for r in &tree.manifest {
                        let area = self.area(&r.to_string());
                        let marker = format!("{r}.prebuilt").into_bytes();
                        // TheRock's populator writes the marker of every relpath but creates the
                        // stage dir only by extracting a member under it.
                        let has_members = tree
                            .entries
                            .iter()
                            .any(|e| e.path.starts_with(r) && &e.path != r);
                        if has_members {
                            self.insert(
                                r.as_bytes().to_vec(),
                                Node::Dir { mode: None },
                                i,
                                Some((area, r.as_bytes().len())),
                            );
                        }
                        self.insert(marker, Node::Marker { area }, i, None);
                    }
                }
                // Where a tree path lands, as TheRock's populator decides: under the first manifest
                // relpath that is its prefix, the relpath kept (bootstrap) or stripped (flatten).
                let map = |p: &[u8]| -> Option<(Vec<u8>, usize)> {
                    let rel = RelPath::from_bytes(p).ok()?;
                    let (k, r) = tree
                        .manifest
                        .iter()
                        .enumerate()
                        .find(|(_, r)| rel.starts_with(r) && &rel != *r)?;
                    let dest = if bootstrap {
                        p.to_vec()
                    } else {
                        p[r.as_bytes().len() + 1..].to_vec()
                    };
                    Some((dest, k))
                };
                // TheRock's archives list members relpath by relpath in manifest order, and a
                // sequential extraction lets the later one win where flattening makes paths
                // collide; process entries in that order (stable: path order within a relpath).
                let mut mapped = Vec::with_capacity(tree.entries.len());
                for e in &tree.entries {
                    if e.path.as_bytes() == ARTIFACT_MANIFEST.as_bytes() {
                        continue;
                    }
                    if tree.manifest.iter().any(|r| r == &e.path) {
                        // The stage directory itself; TheRock never writes it as a member, and its
                        // mode is not part of the contract.
                        if e.kind != EntryKind::Dir {
                            self.problems.push(TreeProblem::Conflict {
                                path: e.path.to_string(),
                                first: self.name(i),
                                second: self.name(i),
                                detail:
                                    "a stage relpath of artifact_manifest.txt is not a directory"
                                        .into(),
                            });
                        }
                        continue;
                    }
                    match map(e.path.as_bytes()) {
                        Some((dest, k)) => mapped.push((k, dest, e)),
                        None => self.problems.push(TreeProblem::OutsideManifest {
                            artifact: self.name(i),
                            path: e.path.to_string(),
                        }),
                    }
                }
                mapped.sort_by_key(|(k, _, _)| *k);
                for (k, dest, e) in mapped {
                    let area = if bootstrap {
                        let r = tree.manifest[k].as_bytes();
                        Some((self.area_index[r], r.len()))
                    } else {
                        None
                    };
                    let link_root_rel = dest.clone();
                    self.add_entry(i, tree, e, dest, &link_root_rel, area, |p| {
                        map(p).map(|(d, _)| d)
                    });
                }
            }
        }
    }

    /// Add one tree entry at `dest`. `root_rel` is the entry's path relative to the root that its
    /// symlinks must stay inside; `map` maps another tree path (a hardlink target) to its destination.
    #[allow(clippy::too_many_arguments)]
    fn add_entry(
        &mut self,
        i: usize,
        tree: &Tree,
        e: &TreeEntry,
        dest: Vec<u8>,
        root_rel: &[u8],
        area: Option<(usize, usize)>,
        map: impl Fn(&[u8]) -> Option<Vec<u8>>,
    ) {
        if components(&dest).any(is_reserved_name) {
            self.problems.push(TreeProblem::Reserved {
                artifact: self.name(i),
                path: e.path.to_string(),
            });
            return;
        }
        let node = match e.kind {
            EntryKind::Dir => Node::Dir {
                mode: dir_mode(self.layout, e.mode),
            },
            EntryKind::File => match e.blake3 {
                Some(blake3) => Node::File {
                    blake3,
                    size: e.size,
                    mode: file_mode(self.layout, e.mode),
                },
                None => {
                    self.problems.push(TreeProblem::MissingDigest {
                        artifact: self.name(i),
                        path: e.path.to_string(),
                    });
                    return;
                }
            },
            EntryKind::Symlink => {
                // `LinkTarget` is never empty and has no NUL; it may still climb out.
                let inside = e.link_target.clone().filter(|t| {
                    RelPath::from_bytes(root_rel)
                        .is_ok_and(|p| p.resolve_link(t.as_bytes()).is_some())
                });
                let Some(target) = inside else {
                    self.problems.push(TreeProblem::SymlinkEscape {
                        artifact: self.name(i),
                        path: e.path.to_string(),
                        target: e
                            .link_target
                            .as_ref()
                            .map(|t| t.to_string())
                            .unwrap_or_default(),
                    });
                    return;
                };
                Node::Symlink { target }
            }
            EntryKind::Hardlink => {
                let target = e.link_target.as_ref().map_or(&[][..], |t| t.as_bytes());
                match resolve_hardlink(tree, target)
                    .and_then(|f| Some((f, map(f.path.as_bytes())?)))
                {
                    Some((f, target_dest)) => Node::Hardlink {
                        target: target_dest,
                        blake3: f
                            .blake3
                            .expect("resolve_hardlink returns files with digests"),
                        size: f.size,
                        mode: file_mode(self.layout, f.mode),
                    },
                    None => {
                        self.problems.push(TreeProblem::BadHardlink {
                            artifact: self.name(i),
                            path: e.path.to_string(),
                            target: shown(target),
                        });
                        return;
                    }
                }
            }
        };
        self.insert(dest, node, i, area);
    }

    /// Insert `node` at `dest`, creating implicit parents, refusing anything below a non-directory and
    /// kind conflicts between artifacts. Among non-directories the later artifact wins, as a
    /// sequential TheRock extraction would leave it.
    fn insert(&mut self, dest: Vec<u8>, node: Node, i: usize, area: Option<(usize, usize)>) {
        // Parents first: each must be (or become) a directory.
        let slashes: Vec<usize> = (0..dest.len()).filter(|&k| dest[k] == b'/').collect();
        for off in slashes {
            let anc = &dest[..off];
            let anc_area = area.filter(|&(_, len)| anc.len() >= len).map(|(a, _)| a);
            match self.plan.entries.get(anc) {
                Some(p) if p.node.is_dir() => {}
                Some(p) => {
                    self.problems.push(TreeProblem::BelowNonDirectory {
                        artifact: self.name(i),
                        path: shown(&dest),
                        ancestor: shown(anc),
                        ancestor_kind: p.node.describe(),
                    });
                    return;
                }
                None => {
                    self.plan.entries.insert(
                        anc.to_vec(),
                        Planned {
                            node: Node::Dir { mode: None },
                            artifact: i,
                            area: anc_area,
                        },
                    );
                }
            }
        }
        let area = area.map(|(a, _)| a);
        match self.plan.entries.get_mut(&dest) {
            None => {
                self.plan.entries.insert(
                    dest,
                    Planned {
                        node,
                        artifact: i,
                        area,
                    },
                );
            }
            Some(existing) => match (&mut existing.node, &node) {
                (Node::Dir { mode }, Node::Dir { mode: new }) => {
                    if new.is_some() {
                        *mode = *new;
                    }
                }
                // Several artifacts of one stage dir share its marker.
                (Node::Marker { area: a }, Node::Marker { area: b }) if a == b => {}
                (old, new)
                    if old.is_dir()
                        || new.is_dir()
                        || matches!(old, Node::Marker { .. })
                        || matches!(new, Node::Marker { .. }) =>
                {
                    let detail = format!("{} vs {}", old.describe(), new.describe());
                    let first = existing.artifact;
                    self.problems.push(TreeProblem::Conflict {
                        path: shown(&dest),
                        first: self.name(first),
                        second: self.name(i),
                        detail,
                    });
                }
                _ => {
                    existing.node = node;
                    existing.artifact = i;
                    existing.area = area;
                }
            },
        }
    }
}

impl Builder<'_> {
    /// Resolve every planned symlink the way the kernel will, through the other symlinks of the
    /// plan (any artifact, any stage dir), and refuse those that end outside their root: the
    /// destination (bootstrap, flatten) or `artifacts/{artifact}` (plain). The per-entry check in
    /// `add_entry` is textual and cannot see that `stage/y -> x/../out` climbs out when
    /// `stage/x -> ../../..`.
    fn check_symlinks_resolved(&mut self, layout: Layout) {
        let mut bad = Vec::new();
        for (path, planned) in &self.plan.entries {
            let Node::Symlink { target } = &planned.node else {
                continue;
            };
            let floor = match layout {
                Layout::Plain => 2,
                Layout::Bootstrap | Layout::Flatten => 0,
            };
            if !resolves_inside(&self.plan.entries, path, target.as_bytes(), floor) {
                bad.push(TreeProblem::SymlinkEscape {
                    artifact: self.name(planned.artifact),
                    path: shown(path),
                    target: target.to_string(),
                });
            }
        }
        self.problems.extend(bad);
    }
}

/// Most symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`; more is refused.
const MAX_SYMLINK_HOPS: usize = 40;

/// True when symlink `link` (a destination path) with `target` resolves, following the planned
/// symlinks it passes through, to a path that keeps its first `floor` components (never climbs
/// above the root it must stay inside). A component the plan does not have is taken as a plain
/// directory: the write phase never creates or follows anything there.
pub(crate) fn resolves_inside(
    entries: &BTreeMap<Vec<u8>, Planned>,
    link: &[u8],
    target: &[u8],
    floor: usize,
) -> bool {
    let mut stack: Vec<&[u8]> = components(link).collect();
    stack.pop();
    if stack.len() < floor {
        return false;
    }
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let push_target = |pending: &mut Vec<Vec<u8>>, t: &[u8]| -> bool {
        if t.starts_with(b"/") || t.is_empty() || t.contains(&0) {
            return false;
        }
        // Reversed: `pending.pop()` takes the next component.
        pending.extend(components(t).rev().map(<[u8]>::to_vec));
        true
    };
    if !push_target(&mut pending, target) {
        return false;
    }
    let mut owned: Vec<Vec<u8>> = stack.iter().map(|s| s.to_vec()).collect();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_slice() {
            b"" | b"." => {}
            b".." => {
                if owned.len() <= floor {
                    return false;
                }
                owned.pop();
            }
            _ => {
                owned.push(c);
                if let Some(Planned {
                    node: Node::Symlink { target: next },
                    ..
                }) = entries.get(&owned.join(&b'/'))
                {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return false;
                    }
                    owned.pop();
                    if !push_target(&mut pending, next.as_bytes()) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// Names cairn keeps for its own files in a destination: the state file and its temp name
/// (`.cairn-state.json*`), the spool of streamed blobs (`.cairn-spool`), write temps
/// (`.cairn-tmp.*`). No tree entry and no stage relpath may use a name starting with `.cairn-`.
pub(crate) fn is_reserved_name(component: &[u8]) -> bool {
    component.starts_with(b".cairn-") || component == STATE_FILE.as_bytes()
}

/// Why a manifest relpath cannot be a bootstrap stage dir, if it cannot. TheRock's relpaths are
/// subproject stage dirs, `{subproject build dir}/stage` (`compiler/amd-llvm/stage`,
/// `math-libs/BLAS/rocBLAS/stage`, `third-party/sysdeps/linux/bzip2/build/stage`), and bootstrap
/// wipes each one it does not own: so a relpath must have a component named exactly `stage` (a bare
/// `compiler` or `third-party-sysdeps` would wipe the user's source-build dirs there), and none of
/// its components may be one of cairn's reserved names.
pub(crate) fn relpath_problem(relpath: &str) -> Option<&'static str> {
    let parts: Vec<&str> = relpath.split('/').collect();
    if parts.iter().any(|c| is_reserved_name(c.as_bytes())) {
        return Some("it names one of cairn's own files (`.cairn-*`)");
    }
    if !parts.contains(&"stage") {
        return Some(
            "a stage relpath has a `stage` component (`{subproject}/stage`, e.g. `compiler/amd-llvm/stage`)",
        );
    }
    None
}

/// Follow a hardlink target through the tree to the file it names (a chain of hardlinks is allowed,
/// a cycle or a non-file is not).
fn resolve_hardlink<'t>(tree: &'t Tree, target: &[u8]) -> Option<&'t TreeEntry> {
    let mut target = target;
    for _ in 0..=tree.entries.len() {
        let rel = RelPath::from_bytes(target).ok()?;
        let idx = tree.entries.binary_search_by(|e| e.path.cmp(&rel)).ok()?;
        let e = &tree.entries[idx];
        match e.kind {
            EntryKind::File if e.blake3.is_some() => return Some(e),
            EntryKind::Hardlink => target = e.link_target.as_ref()?.as_bytes(),
            _ => return None,
        }
    }
    None
}
