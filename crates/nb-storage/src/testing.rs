//! A real S3 protocol server for tests: s3s-fs over a temporary folder, on a loopback port,
//! checking the SigV4 signature of every request — and failing on purpose when a test says
//! so ([`S3TestServer::set_fault`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{Body, HttpError, HttpRequest, HttpResponse};

/// How the server misbehaves, from the next request on (connections already open included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFault {
    /// Serves normally.
    #[default]
    None,
    /// Answers every request with this status and an S3 error document (`503`: `SlowDown`,
    /// `500`: `InternalError`).
    Status(u16),
    /// Closes every connection without answering (a store that cannot be reached).
    CloseConnections,
    /// Answers 500 to the upload of every part numbered this or higher of a multipart
    /// upload, and serves everything else (a store failing mid-upload).
    FailPartsFrom(u32),
    /// Reads requests and never answers (a hung store).
    Hang,
}

/// Serves until dropped (with its runtime). Buckets are folders under [`S3TestServer::root`].
#[derive(Debug)]
pub struct S3TestServer {
    pub endpoint: String,
    folder: tempfile::TempDir,
    fault: Arc<Mutex<StoreFault>>,
}

/// The S3 service behind the current [`StoreFault`].
#[derive(Clone)]
struct FaultyService {
    inner: S3Service,
    fault: Arc<Mutex<StoreFault>>,
}

fn current(fault: &Mutex<StoreFault>) -> StoreFault {
    *fault.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `partNumber` of an upload of a part.
fn part_number(request: &HttpRequest<Incoming>) -> Option<u32> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("partNumber="))?
        .parse()
        .ok()
}

impl hyper::service::Service<HttpRequest<Incoming>> for FaultyService {
    type Response = HttpResponse;
    type Error = HttpError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'static>>;

    fn call(&self, request: HttpRequest<Incoming>) -> Self::Future {
        let mut fault = current(&self.fault);
        if let StoreFault::FailPartsFrom(first) = fault {
            fault = match part_number(&request) {
                Some(number) if number >= first => StoreFault::Status(500),
                _ => StoreFault::None,
            };
        }
        let inner = self.inner.clone();
        Box::pin(async move {
            match fault {
                StoreFault::None => hyper::service::Service::call(&inner, request).await,
                StoreFault::Status(status) => {
                    let code = if status == 503 {
                        "SlowDown"
                    } else {
                        "InternalError"
                    };
                    let document = format!(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
                         <Message>failing on purpose</Message></Error>"
                    );
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", "application/xml")
                        .body(Body::from(document))
                        .map_err(|error| HttpError::new(Box::new(error)))
                }
                // An error ends the connection without an answer.
                StoreFault::CloseConnections => Err(HttpError::new("closing on purpose".into())),
                StoreFault::Hang => std::future::pending().await,
                StoreFault::FailPartsFrom(_) => unreachable!("decided above"),
            }
        })
    }
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
        let fault = Arc::new(Mutex::new(StoreFault::None));
        let service = FaultyService {
            inner: builder.build(),
            fault: fault.clone(),
        };
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
                if current(&service.fault) == StoreFault::CloseConnections {
                    drop(socket);
                    continue;
                }
                let service = service.clone();
                tokio::spawn(async move {
                    let connection = ConnectionBuilder::new(TokioExecutor::new());
                    let _ = connection
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            folder,
            fault,
        }
    }

    /// Makes the server misbehave (or serve again, with [`StoreFault::None`]).
    pub fn set_fault(&self, fault: StoreFault) {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    }

    /// The folder holding one sub-folder per bucket.
    pub fn root(&self) -> PathBuf {
        self.folder.path().to_owned()
    }
}
