//! Generates the `cairn.v1` client and server with a vendored `protoc`, so a fresh machine needs no
//! system package to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("cairn_descriptor.bin"))
        .compile_protos(&["proto/cairn/v1/cairn.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/cairn/v1/cairn.proto");
    Ok(())
}
