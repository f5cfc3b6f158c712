//! Generates the gRPC code from `proto/*.proto` with a pure-Rust protobuf compiler (`protox`),
//! so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["ferrokv.proto"], ["proto"])?;
    tonic_prost_build::configure().bytes(".ferrokv.v1").compile_fds(fds)?;
    Ok(())
}
