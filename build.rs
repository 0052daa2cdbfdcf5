//! Compiles proto/ovnvip/v1/ovnvip.proto (protoc from Debian's protobuf-compiler) into tonic
//! services and a file descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ovnvip_descriptor.bin"))
        .compile_protos(&["proto/ovnvip/v1/ovnvip.proto"], &["proto"])?;
    Ok(())
}
