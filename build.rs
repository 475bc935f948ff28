//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building needs no
//! system `protoc`, and writes the descriptor set that server reflection publishes.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tokenledger/ledger/v1/events.proto",
        "proto/tokenledger/v1/token.proto",
        "proto/tokenledger/v1/admin.proto",
        "proto/tokenledger/v1/audit.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tokenledger_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The audit API embeds stored events; they are generated once, in `proto::ledger`.
        .extern_path(".tokenledger.ledger.v1", "crate::proto::ledger")
        .compile_fds(descriptors)?;
    Ok(())
}
