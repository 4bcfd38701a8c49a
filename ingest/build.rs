//! Generates the gRPC service and messages of `proto/visionq/v1/detector.proto`
//! (tonic and prost; protoc from the system, installed by scripts/build-deps).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        // Frames stay reference-counted from the socket to the broker: no copy.
        .bytes(".")
        .compile_protos(&["proto/visionq/v1/detector.proto"], &["proto"])?;
    Ok(())
}
