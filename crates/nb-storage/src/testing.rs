//! A real S3 protocol server for tests: s3s-fs over a temporary folder, on a loopback port,
//! checking the SigV4 signature of every request.

use std::path::PathBuf;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Serves until dropped (with its runtime). Buckets are folders under [`S3TestServer::root`].
#[derive(Debug)]
pub struct S3TestServer {
    pub endpoint: String,
    folder: tempfile::TempDir,
}

impl S3TestServer {
    /// Starts a server that accepts only `access_key`/`secret_key`, with `buckets` created.
    ///
    /// # Panics
    /// When no temporary folder or loopback port can be had.
    pub async fn start(access_key: &str, secret_key: &str, buckets: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", access_key, secret_key, buckets).await
    }

    /// As [`S3TestServer::start`], on a chosen address.
    ///
    /// # Panics
    /// When no temporary folder can be had or the address cannot be bound.
    pub async fn start_on(
        address: &str,
        access_key: &str,
        secret_key: &str,
        buckets: &[&str],
    ) -> Self {
        let folder = tempfile::tempdir().expect("no temporary folder");
        for bucket in buckets {
            std::fs::create_dir(folder.path().join(bucket)).expect("cannot create a bucket");
        }
        let filesystem = s3s_fs::FileSystem::new(folder.path()).expect("cannot serve the folder");
        let mut builder = S3ServiceBuilder::new(filesystem);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        let service = builder.build();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .expect("cannot bind");
        let endpoint = format!(
            "http://{}",
            listener.local_addr().expect("no local address")
        );
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let connection = ConnectionBuilder::new(TokioExecutor::new());
                    let _ = connection
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { endpoint, folder }
    }

    /// The folder holding one sub-folder per bucket.
    pub fn root(&self) -> PathBuf {
        self.folder.path().to_owned()
    }
}
