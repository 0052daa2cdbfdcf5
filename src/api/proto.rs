//! The generated protobuf types and tonic services of `ovnvip.v1`.

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("ovnvip.v1");
}

/// The file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ovnvip_descriptor");
