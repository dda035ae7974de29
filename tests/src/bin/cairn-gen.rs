//! `cairn-gen`: write a set of TheRock-shaped archives (with `.sha256sum` sidecars) into a directory,
//! for benchmarks and manual testing. Deterministic: the same arguments give the same bytes.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_fingerprint::Compression;
use cairn_testkit::datagen::{self, ArtifactSpec};
use clap::{Parser, ValueEnum};

/// Generate TheRock-shaped artifact archives.
#[derive(Debug, Parser)]
#[command(name = "cairn-gen")]
struct Args {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Total bytes of file content across the set (overrides `--scale`).
    #[arg(long)]
    bytes: Option<u64>,
    /// Preset sizes: small 8 MiB, medium 256 MiB, large 2 GiB.
    #[arg(long, value_enum, default_value_t = Scale::Small)]
    scale: Scale,
    /// Compression of the archives.
    #[arg(long, value_enum, default_value_t = Comp::Zstd)]
    compression: Comp,
    /// Also keep the exploded artifact directories under `OUT/artifacts/`.
    #[arg(long)]
    keep_dirs: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scale {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Comp {
    Zstd,
    Xz,
    Both,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-gen: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> std::io::Result<()> {
    let bytes = args.bytes.unwrap_or(match args.scale {
        Scale::Small => 8 << 20,
        Scale::Medium => 256 << 20,
        Scale::Large => 2 << 30,
    });
    let compressions: Vec<Compression> = match args.compression {
        Comp::Zstd => vec![Compression::Zstd],
        Comp::Xz => vec![Compression::Xz],
        Comp::Both => vec![Compression::Zstd, Compression::Xz],
    };
    std::fs::create_dir_all(&args.out)?;
    let work = tempfile::tempdir_in(&args.out)?;
    let dirs_root = if args.keep_dirs {
        args.out.join("artifacts")
    } else {
        work.path().to_path_buf()
    };
    for spec in datagen::standard_set(args.seed, bytes) {
        let dir = datagen::generate_artifact_dir(&dirs_root, &spec)?;
        for c in &compressions {
            let a = datagen::archive_artifact_dir(&dir, &args.out, *c)?;
            report(&spec, &a);
        }
    }
    Ok(())
}

fn report(spec: &ArtifactSpec, a: &datagen::GeneratedArchive) {
    println!(
        "{} files={} uncompressed_size={} compressed_size={} ratio={:.2} sha256={}",
        a.path.file_name().unwrap_or_default().to_string_lossy(),
        a.info.files,
        a.info.uncompressed_size,
        a.info.compressed_size,
        a.info.uncompressed_size as f64 / a.info.compressed_size.max(1) as f64,
        a.sha256
    );
    let _ = spec;
}
