//! `cargo run -p nb-storage --features testing --example s3-test-server -- ADDRESS ACCESS SECRET BUCKET`
//! A throwaway S3 server for the end-to-end script; prints its endpoint, serves until killed.

#![allow(clippy::unwrap_used)]

use nb_storage::testing::S3TestServer;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [address, access, secret, bucket] = args.as_slice() else {
        eprintln!("usage: s3-test-server ADDRESS ACCESS_KEY SECRET_KEY BUCKET");
        std::process::exit(2);
    };
    let server = S3TestServer::start_on(address, access, secret, &[bucket]).await;
    println!("{} {}", server.endpoint, server.root().display());
    std::future::pending::<()>().await;
}
