//! Generates the meshdns.v1 code. protoc comes from `protoc-bin-vendored`
//! unless `PROTOC` names another, so a fresh machine needs nothing but cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = tonic_prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        cfg.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Small starting buffers per stream (src/codec.rs).
        .codec_path("crate::codec::LeanCodec")
        .compile_with_config(cfg, &["proto/meshdns/v1/registry.proto"], &["proto"])?;
    Ok(())
}
