//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building needs no
//! system `protoc`, and writes the descriptor set that server reflection publishes.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/tokenledger/ledger/v1/events.proto",
        "proto/tokenledger/ledger/v1/raft.proto",
        "proto/tokenledger/v1/token.proto",
        "proto/tokenledger/v1/admin.proto",
        "proto/tokenledger/v1/users.proto",
        "proto/tokenledger/v1/keys.proto",
        "proto/tokenledger/v1/audit.proto",
        "proto/tokenledger/v1/cluster.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tokenledger_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Two passes: the stored event format alone, into `proto::ledger`; then everything with
    // that package extern, so the audit API's messages that embed stored events refer to
    // `proto::ledger` (prost generates no code for an extern package, hence the first pass).
    let ledger: Vec<_> = descriptors.file.iter().filter(|f| f.package() == "tokenledger.ledger.v1").cloned().collect();
    let ledger = prost_types::FileDescriptorSet { file: ledger };
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(ledger)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".tokenledger.ledger.v1", "crate::proto::ledger")
        .compile_fds(descriptors)?;
    // The Raft traffic between cluster nodes: compiled on its own, so it stays out of the
    // descriptor set that reflection publishes on the API listener.
    let cluster_file = "proto/tokenledger/cluster/v1/raft_service.proto";
    println!("cargo:rerun-if-changed={cluster_file}");
    // (The imported stored formats come along; being extern, they generate nothing again.)
    let cluster = protox::compile([cluster_file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .extern_path(".tokenledger.ledger.v1", "crate::proto::ledger")
        .compile_fds(cluster)?;
    Ok(())
}
