//! TheRock-shaped test data: seeded, deterministic artifact directories and their archives.
//!
//! An *artifact directory* is what TheRock's build leaves in `build/artifacts/`:
//! `{name}_{component}_{family}/artifact_manifest.txt` plus, below each relpath the manifest lists
//! (here `{group}/{name}/stage`), a slice of an install tree. The generator fills it with a realistic
//! mix for the component: a few large shared libraries or executables whose content compresses about
//! 3–4× with zstd (neither random nor zeros: literals interleaved with repeats from a per-artifact
//! dictionary, like machine code), many small text files (headers, CMake files, docs), `libfoo.so ->
//! libfoo.so.1 -> libfoo.so.1.2.0` symlink chains, a hard link, an empty directory. The total is
//! scaled to a byte budget.
//!
//! Everything is a pure function of the [`ArtifactSpec`] (own PRNG, fixed mtimes, sorted archive
//! members, no owners), so the same spec gives byte-identical archives on any machine.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_daemon::archive::{self, ArchiveInfo, CreateOptions};
use cairn_fingerprint::{Compression, Sha256};

/// The mtime every generated file, directory and symlink gets.
pub const GENERATED_MTIME: i64 = 1_750_000_000;

/// What to generate: one artifact `{name}_{component}_{family}` of about `bytes` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// Artifact name (`amd-llvm`, `blas`, ...). No `_`.
    pub name: String,
    /// Component: `lib`, `run`, `dev`, `dbg`, `doc`, `test` (others get a generic mix).
    pub component: String,
    /// Target family (`generic`, `gfx94X-dcgpu`, ...).
    pub family: String,
    /// Artifact group: the first part of the stage relpath `{group}/{name}/stage`.
    pub group: String,
    /// Approximate total of file contents, in bytes.
    pub bytes: u64,
    /// PRNG seed; same spec, same bytes.
    pub seed: u64,
    /// How the bytes spread over files and how well they compress.
    pub shape: Shape,
}

/// How an artifact's bytes spread over files and how well they compress: the two data shapes the
/// benchmarks report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// Most of TheRock's artifacts: 3/4 of the bytes in 1–3 large binaries that compress 3–4× with
    /// zstd-3, the rest in many small text files (headers, CMake files, docs).
    #[default]
    ManyFiles,
    /// Like `amd-llvm` and `blas`: 95% of the bytes in 2–7 large binaries of low compressibility
    /// (≈1.6× with zstd-3, like optimised device code), few small files.
    BigFiles,
}

impl Shape {
    /// Share of the bytes in large binaries, in percent.
    fn large_percent(self) -> u64 {
        match self {
            Shape::ManyFiles => 75,
            Shape::BigFiles => 95,
        }
    }

    /// How many large binaries an artifact has: `lo..hi`.
    fn large_count(self) -> (u64, u64) {
        match self {
            Shape::ManyFiles => (1, 4),
            Shape::BigFiles => (2, 8),
        }
    }

    /// Chance in percent that the next run of binary content is random literals (the rest repeats
    /// the artifact's dictionary): the knob of compressibility.
    fn literal_percent(self) -> u64 {
        match self {
            Shape::ManyFiles => 25,
            Shape::BigFiles => 80,
        }
    }
}

impl ArtifactSpec {
    /// A spec with `group` = `"math-libs"`.
    pub fn new(name: &str, component: &str, family: &str, bytes: u64, seed: u64) -> ArtifactSpec {
        ArtifactSpec {
            name: name.into(),
            component: component.into(),
            family: family.into(),
            group: "math-libs".into(),
            bytes,
            seed,
            shape: Shape::default(),
        }
    }

    /// `{name}_{component}_{family}`: the directory name and archive stem.
    pub fn dir_name(&self) -> String {
        format!("{}_{}_{}", self.name, self.component, self.family)
    }

    /// The stage relpath listed in the manifest: `{group}/{name}/stage`.
    pub fn relpath(&self) -> String {
        format!("{}/{}/stage", self.group, self.name)
    }

    /// The archive file name for a compression.
    pub fn archive_name(&self, compression: Compression) -> String {
        format!("{}{}", self.dir_name(), compression.extension())
    }
}

/// An archive written by [`write_archive`] or [`archive_artifact_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedArchive {
    /// The archive file.
    pub path: PathBuf,
    /// Its `.sha256sum` sidecar.
    pub sha256sum_path: PathBuf,
    /// SHA-256 of the archive.
    pub sha256: Sha256,
    /// Sizes and file count.
    pub info: ArchiveInfo,
    /// zstd or xz.
    pub compression: Compression,
}

/// A small, fast, portable PRNG (SplitMix64): the generator's output must not change when `rand`
/// does.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// Log-uniform in `lo..hi`: many small values, a few large ones, like file sizes.
    pub fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(2) as f64).ln());
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (l + u * (h - l)).exp() as u64
    }
}

/// Binary content that compresses like machine code (about 3–4× with zstd -3): random literal runs
/// interleaved with copies from a per-artifact dictionary.
pub fn binary_content(rng: &mut Rng, dict: &[u8], size: usize) -> Vec<u8> {
    binary_content_with(rng, dict, size, Shape::ManyFiles.literal_percent())
}

/// Binary content whose next run is random literals with a chance of `literal_percent`, else a copy
/// from `dict`: 25 compresses like machine code, 80 like optimised device code (≈1.6× with zstd-3).
fn binary_content_with(rng: &mut Rng, dict: &[u8], size: usize, literal_percent: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 64);
    let mut lit = [0u8; 16];
    while out.len() < size {
        let r = rng.next_u64();
        if r % 100 < literal_percent {
            let n = 1 + (r >> 8) as usize % 12;
            rng.fill(&mut lit[..n]);
            out.extend_from_slice(&lit[..n]);
        } else {
            let n = 6 + (r >> 8) as usize % 40;
            let at = (r >> 20) as usize % (dict.len() - n);
            out.extend_from_slice(&dict[at..at + n]);
        }
    }
    out.truncate(size);
    out
}

const WORDS: &[&str] = &[
    "hip", "rocm", "blas", "gemm", "stream", "device", "kernel", "launch", "buffer", "handle",
    "status", "config", "tensor", "layout", "stride", "batch", "queue", "event", "memory", "alloc",
    "copy", "async", "sync", "wave", "lane", "block", "grid", "dim", "index", "offset", "size",
    "count", "arch", "target", "feature", "xnack", "sramecc", "solver", "fft", "rand", "sparse",
    "prim",
];
const TYPES: &[&str] = &[
    "int",
    "float",
    "double",
    "size_t",
    "uint32_t",
    "int64_t",
    "void",
    "hipStream_t",
];

/// Text content: C declarations, CMake lines and prose built from a small vocabulary (compresses
/// about 5–8×, like real headers).
pub fn text_content(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 128);
    let word = |rng: &mut Rng| WORDS[rng.range(0, WORDS.len() as u64) as usize];
    while out.len() < size {
        let line = match rng.range(0, 5) {
            0 => format!(
                "{} {}_{}_{}({} {}, {}* {});\n",
                TYPES[rng.range(0, TYPES.len() as u64) as usize],
                word(rng),
                word(rng),
                word(rng),
                TYPES[rng.range(0, TYPES.len() as u64) as usize],
                word(rng),
                TYPES[rng.range(0, TYPES.len() as u64) as usize],
                word(rng)
            ),
            1 => format!(
                "#define {}_{}_{} {}\n",
                word(rng).to_uppercase(),
                word(rng).to_uppercase(),
                rng.range(0, 4096),
                rng.range(0, 1 << 20)
            ),
            2 => format!(
                "set({}_{} \"${{{}_{}}}/{}\")\n",
                word(rng),
                word(rng),
                word(rng),
                word(rng),
                word(rng)
            ),
            3 => format!(
                "// The {} {} of the {} is {} before {}.\n",
                word(rng),
                word(rng),
                word(rng),
                word(rng),
                word(rng)
            ),
            _ => format!(
                "  {}.{} = {:#x};\n",
                word(rng),
                word(rng),
                rng.next_u64() & 0xffff_ffff
            ),
        };
        out.extend_from_slice(line.as_bytes());
    }
    out.truncate(size);
    out
}

/// Generate the artifact directory `{root}/{name}_{component}_{family}` (replacing any previous one)
/// and return its path.
pub fn generate_artifact_dir(root: &Path, spec: &ArtifactSpec) -> io::Result<PathBuf> {
    let dir = root.join(spec.dir_name());
    if dir.exists() {
        make_writable(&dir)?;
        fs::remove_dir_all(&dir)?;
    }
    let stage = dir.join(spec.relpath());
    fs::create_dir_all(&stage)?;
    fs::write(
        dir.join(cairn_fingerprint::tree::ARTIFACT_MANIFEST),
        format!("{}\n", spec.relpath()),
    )?;

    let mut rng = Rng::new(spec.seed);
    let mut dict = vec![0u8; 64 * 1024];
    rng.fill(&mut dict);
    let name = spec.name.as_str();
    let budget = spec.bytes.max(4096);
    let large_budget = budget * spec.shape.large_percent() / 100;
    let small_budget = budget - large_budget;
    let (lo, hi) = spec.shape.large_count();
    let large_count = rng.range(lo, hi) as usize;

    let mut w = Writer {
        stage: &stage,
        rng: &mut rng,
        dict: &dict,
        literal_percent: spec.shape.literal_percent(),
    };
    // Large members by component.
    let large_sizes = split(large_budget, large_count, w.rng);
    match spec.component.as_str() {
        "lib" => {
            for (i, size) in large_sizes.iter().enumerate() {
                let lib = if i == 0 {
                    format!("lib{name}")
                } else {
                    format!("lib{name}-part{i}")
                };
                let real = format!("lib/{lib}.so.1.{i}.0");
                w.binary(&real, *size, 0o755)?;
                w.symlink(&format!("lib/{lib}.so.1"), &format!("{lib}.so.1.{i}.0"))?;
                w.symlink(&format!("lib/{lib}.so"), &format!("{lib}.so.1"))?;
            }
        }
        "dev" => {
            for (i, size) in large_sizes.iter().enumerate() {
                w.binary(&format!("lib/lib{name}_static{i}.a"), *size, 0o644)?;
            }
            w.text(
                &format!("lib/cmake/{name}/{name}-config.cmake"),
                2000,
                0o644,
            )?;
            w.text(&format!("lib/pkgconfig/{name}.pc"), 300, 0o644)?;
        }
        "dbg" => {
            for size in &large_sizes {
                let id = format!("{:016x}", w.rng.next_u64());
                w.binary(
                    &format!(".build-id/{}/{}.debug", &id[..2], &id[2..]),
                    *size,
                    0o644,
                )?;
            }
        }
        "doc" => {
            w.text(
                &format!("share/doc/{name}/manual.html"),
                large_budget as usize,
                0o644,
            )?;
        }
        _ => {
            // run, test and anything else: executables, one of them hard-linked under a second name.
            // Components of one artifact share its stage dir, so only `run` takes the plain names:
            // TheRock's components never overlap, and neither may two generated ones.
            let (tool, alias) = match spec.component.as_str() {
                "run" => ("tool".to_string(), name.to_string()),
                other => (other.to_string(), format!("{name}-{other}")),
            };
            for (i, size) in large_sizes.iter().enumerate() {
                w.binary(&format!("bin/{name}-{tool}{i}"), *size, 0o755)?;
            }
            let first = w.stage.join(format!("bin/{name}-{tool}0"));
            fs::hard_link(&first, w.stage.join(format!("bin/{alias}")))?;
            w.symlink(&format!("bin/{alias}-latest"), &format!("{name}-{tool}0"))?;
        }
    }

    // Small members: many text files, log-uniform sizes.
    let small_dir = match spec.component.as_str() {
        "dev" => format!("include/{name}"),
        "doc" => format!("share/doc/{name}"),
        "test" => format!("share/{name}/test"),
        "dbg" => format!("lib/debug/{name}"),
        "lib" => format!("lib/{name}/data"),
        _ => format!("share/{name}"),
    };
    let mut left = small_budget;
    let mut i = 0;
    while left > 0 && i < 20_000 {
        let size = w.rng.log_range(64, 32 * 1024).min(left);
        let sub = if i % 7 == 6 {
            format!("/detail{}", i % 3)
        } else {
            String::new()
        };
        let ext = if spec.component == "dev" { "h" } else { "txt" };
        w.text(
            &format!("{small_dir}{sub}/file{i:05}.{ext}"),
            size as usize,
            0o644,
        )?;
        left -= size;
        i += 1;
    }
    fs::create_dir_all(stage.join(format!("share/{name}/empty")))?;

    set_mtimes(&dir)?;
    Ok(dir)
}

/// Split `total` into `n` parts of varied size.
fn split(total: u64, n: usize, rng: &mut Rng) -> Vec<u64> {
    let weights: Vec<u64> = (0..n).map(|_| rng.range(1, 10)).collect();
    let sum: u64 = weights.iter().sum();
    weights.iter().map(|w| total * w / sum).collect()
}

struct Writer<'a> {
    stage: &'a Path,
    rng: &'a mut Rng,
    dict: &'a [u8],
    literal_percent: u64,
}

impl Writer<'_> {
    fn put(&mut self, rel: &str, content: &[u8], mode: u32) -> io::Result<()> {
        let path = self.stage.join(rel);
        fs::create_dir_all(path.parent().expect("below the stage"))?;
        let mut f = fs::File::create(&path)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))
    }

    fn binary(&mut self, rel: &str, size: u64, mode: u32) -> io::Result<()> {
        let content = binary_content_with(self.rng, self.dict, size as usize, self.literal_percent);
        self.put(rel, &content, mode)
    }

    fn text(&mut self, rel: &str, size: usize, mode: u32) -> io::Result<()> {
        let content = text_content(self.rng, size);
        self.put(rel, &content, mode)
    }

    fn symlink(&mut self, rel: &str, target: &str) -> io::Result<()> {
        let path = self.stage.join(rel);
        fs::create_dir_all(path.parent().expect("below the stage"))?;
        std::os::unix::fs::symlink(target, path)
    }
}

/// Give every entry below `dir` (symlinks included, not followed) the fixed [`GENERATED_MTIME`].
pub fn set_mtimes(dir: &Path) -> io::Result<()> {
    set_all_mtimes(dir, GENERATED_MTIME)
}

/// Give `dir` and every entry below it (symlinks included, not followed) the mtime `secs`.
pub fn set_all_mtimes(dir: &Path, secs: i64) -> io::Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
            all.push(entry.path());
        }
    }
    all.push(dir.to_path_buf());
    // Children before parents: setting a child's time does not touch its parent's, but creating
    // did, so parents go last anyway for clarity.
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, secs)?;
    }
    Ok(())
}

/// Set a path's mtime (and atime) without following a final symlink.
pub fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755))?;
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Archive an artifact directory into `out_dir/{dir name}{extension}` with TheRock's default level,
/// and write its `.sha256sum` sidecar.
pub fn archive_artifact_dir(
    dir: &Path,
    out_dir: &Path,
    compression: Compression,
) -> io::Result<GeneratedArchive> {
    archive_artifact_dir_with(dir, out_dir, &CreateOptions::new(compression))
}

/// [`archive_artifact_dir`] with explicit options (level, member order).
pub fn archive_artifact_dir_with(
    dir: &Path,
    out_dir: &Path,
    opts: &CreateOptions,
) -> io::Result<GeneratedArchive> {
    let stem = dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "artifact dir has no UTF-8 name",
        )
    })?;
    fs::create_dir_all(out_dir)?;
    let path = out_dir.join(format!("{stem}{}", opts.compression.extension()));
    let info = archive::create_archive_with(dir, &path, opts).map_err(io::Error::other)?;
    let sha256sum_path = archive::write_sha256sum(&path, &info.sha256)?;
    Ok(GeneratedArchive {
        path,
        sha256sum_path,
        sha256: info.sha256,
        info,
        compression: opts.compression,
    })
}

/// Generate `spec` in a temporary directory and archive it into `out_dir` (with sidecar).
pub fn write_archive(
    spec: &ArtifactSpec,
    out_dir: &Path,
    compression: Compression,
) -> io::Result<GeneratedArchive> {
    let tmp = tempfile::tempdir()?;
    let dir = generate_artifact_dir(tmp.path(), spec)?;
    archive_artifact_dir(&dir, out_dir, compression)
}

/// A stage-like set of artifacts sharing `bytes` between them: target-neutral `_generic` archives
/// (compiler, libraries), target-specific ones for two families (the same library built twice, so
/// different content), and the tiny `dbg`/`doc` archives real stages have.
pub fn standard_set(seed: u64, bytes: u64) -> Vec<ArtifactSpec> {
    let parts: &[(&str, &str, &str, &str, u64)] = &[
        ("amd-llvm", "lib", "generic", "compiler", 22),
        ("amd-llvm", "dev", "generic", "compiler", 14),
        ("amd-llvm", "run", "generic", "compiler", 8),
        ("amd-llvm", "doc", "generic", "compiler", 1),
        ("amd-llvm", "dbg", "generic", "compiler", 1),
        ("rand", "lib", "generic", "math-libs", 6),
        ("rand", "dev", "generic", "math-libs", 3),
        ("blas", "lib", "gfx94X-dcgpu", "math-libs", 16),
        ("blas", "lib", "gfx110X-all", "math-libs", 16),
        ("blas", "dev", "generic", "math-libs", 5),
        ("blas", "test", "gfx94X-dcgpu", "math-libs", 8),
    ];
    let total: u64 = parts.iter().map(|p| p.4).sum();
    parts
        .iter()
        .enumerate()
        .map(
            |(i, (name, component, family, group, share))| ArtifactSpec {
                name: name.to_string(),
                component: component.to_string(),
                family: family.to_string(),
                group: group.to_string(),
                bytes: bytes * share / total,
                seed: seed.wrapping_mul(0x100_0000_01B3).wrapping_add(i as u64),
                shape: Shape::default(),
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two shapes differ as their docs say: `BigFiles` puts its bytes in few files that
    /// compress about 1.6× with zstd-3; `ManyFiles` compresses 3–4× over many small files.
    #[test]
    fn shapes_differ_in_file_count_and_compressibility() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let measure = |shape: Shape| {
            let mut spec = ArtifactSpec::new("blas", "lib", "generic", 8 << 20, 11);
            spec.shape = shape;
            let dir = generate_artifact_dir(&tmp.path().join(format!("{shape:?}")), &spec)
                .expect("generate");
            let out = tmp.path().join(format!("{shape:?}-out"));
            fs::create_dir_all(&out).expect("out");
            let a = archive_artifact_dir(&dir, &out, Compression::Zstd).expect("archive");
            let ratio = a.info.uncompressed_size as f64 / a.info.compressed_size as f64;
            (a.info.files, ratio)
        };
        let (many_files, many_ratio) = measure(Shape::ManyFiles);
        let (big_files, big_ratio) = measure(Shape::BigFiles);
        assert!(
            (1.4..1.9).contains(&big_ratio),
            "BigFiles ratio {big_ratio:.2}"
        );
        assert!(many_ratio > 2.5, "ManyFiles ratio {many_ratio:.2}");
        assert!(
            big_files * 3 < many_files,
            "BigFiles {big_files} files vs ManyFiles {many_files}"
        );
    }
}
