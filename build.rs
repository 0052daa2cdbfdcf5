//! Compiles proto/ovnvip/v1/ovnvip.proto into tonic services and a file descriptor set for server
//! reflection. The compiler is `protox`, a protobuf compiler written in Rust that carries the
//! well-known types (google/protobuf/*.proto) itself: building needs no `protoc` and no system
//! protobuf package.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    // As prost-build runs protoc: every imported file and the source info (comments) included.
    let file_descriptor_set = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(["ovnvip/v1/ovnvip.proto"])?
        .file_descriptor_set();
    std::fs::write(
        out_dir.join("ovnvip_descriptor.bin"),
        file_descriptor_set.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(file_descriptor_set)?;
    Ok(())
}
