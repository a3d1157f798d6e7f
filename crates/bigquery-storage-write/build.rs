//! Generates the tonic/prost code for Google's BigQuery Storage API protos (vendored under
//! `proto/google`) without needing a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // The well-known types (timestamp, wrappers, descriptor) ship with the vendored protoc.
    let well_known = protoc_bin_vendored::include_path()?;
    let storage = root.join("google/cloud/bigquery/storage/v1/storage.proto");
    println!("cargo:rerun-if-changed={}", root.join("google").display());
    tonic_prost_build::configure()
        // The server side exists for the in-process test server only; it costs little to build.
        .build_server(true)
        // Record batches are shared between a request and its retries without copying.
        .bytes(".google.cloud.bigquery.storage.v1.ArrowSchema")
        .bytes(".google.cloud.bigquery.storage.v1.ArrowRecordBatch")
        .compile_protos(&[storage], &[root, well_known])?;
    Ok(())
}
