//! The `cairn.v1` gRPC contract: generated messages, client and server. See
//! `proto/cairn/v1/cairn.proto` for the documented schema.

#![allow(missing_docs, clippy::all)]

/// Package `cairn.v1`.
pub mod v1 {
    tonic::include_proto!("cairn.v1");
}

/// Encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cairn_descriptor");

/// Metadata key (value `cairnd`) on every error status the daemon itself decided on: a client tells
/// "cairnd answered with an error" (its storage unreachable, say, also `UNAVAILABLE`) from "the
/// connection to cairnd broke", which the transport reports without it.
pub const ERROR_ORIGIN_KEY: &str = "cairn-origin";

/// Where `cairnd` listens and `cairn` connects when neither is told otherwise: part of the contract,
/// so both sides take it from here. `$XDG_RUNTIME_DIR/cairn/cairnd.sock`, else
/// `/tmp/cairn-$UID/cairnd.sock` (per user, so the socket's directory permissions are the access
/// control).
pub fn default_socket() -> std::path::PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => std::path::PathBuf::from(dir)
            .join("cairn")
            .join("cairnd.sock"),
        _ => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            std::env::temp_dir()
                .join(format!("cairn-{uid}"))
                .join("cairnd.sock")
        }
    }
}
