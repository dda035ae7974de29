//! The `cairn.v1` gRPC contract: generated messages, client and server. See
//! `proto/cairn/v1/cairn.proto` for the documented schema.

#![allow(missing_docs, clippy::all)]

/// Package `cairn.v1`.
pub mod v1 {
    tonic::include_proto!("cairn.v1");
}

/// Encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cairn_descriptor");
