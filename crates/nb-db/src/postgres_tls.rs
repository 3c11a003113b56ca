//! Connecting to PostgreSQL, with TLS when `DATABASE_URL` asks for it, as libpq does:
//! `sslmode=disable|prefer|require|verify-ca|verify-full` and `sslrootcert=<PEM file>`
//! (managed databases: Neon, Supabase, RDS, Cloud SQL). TLS is rustls; no OpenSSL.
//!
//! - `disable`: plain TCP. `prefer` (libpq's default, and ours): TLS when the server offers
//!   it, without checking its certificate, else plain.
//! - `require`: TLS or no connection; the certificate is not checked unless `sslrootcert` is
//!   given (then as `verify-ca`, like libpq).
//! - `verify-ca`: the certificate must chain to `sslrootcert` (or, without it, to Mozilla's
//!   roots: publicly signed managed databases). `verify-full`: that, and it must name the
//!   host of the URL.
//!
//! The driver (tokio-postgres) knows only `disable`, `prefer` and `require`: the TLS settings
//! are taken off the URL, which is passed on without them.

use std::sync::Arc;

use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the URL asks for TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidTlsSettings {
    #[error("DATABASE_URL is not a valid URL")]
    Url,
    #[error(
        "sslmode={0:?} is not supported: use disable, prefer, require, verify-ca or verify-full"
    )]
    Mode(String),
    #[error("cannot read sslrootcert {path:?}: {reason}")]
    RootCertificate { path: String, reason: String },
    #[error("{0} is not supported (client certificates are not)")]
    Unsupported(&'static str),
}

/// Where and how to connect.
#[derive(Clone)]
pub struct PostgresTarget {
    /// The URL for the driver: without the TLS settings it does not know.
    driver_url: String,
    mode: SslMode,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl PostgresTarget {
    pub fn from_url(raw: &str) -> Result<Self, InvalidTlsSettings> {
        let mut url = url::Url::parse(raw).map_err(|_| InvalidTlsSettings::Url)?;
        let mut mode = SslMode::Prefer;
        let mut root_certificate = None;
        let mut kept = Vec::new();
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "sslmode" => {
                    mode = match value.as_ref() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => return Err(InvalidTlsSettings::Mode(other.to_owned())),
                    };
                }
                "sslrootcert" => root_certificate = Some(value.into_owned()),
                "sslcert" => return Err(InvalidTlsSettings::Unsupported("sslcert")),
                "sslkey" => return Err(InvalidTlsSettings::Unsupported("sslkey")),
                // libpq options the driver would refuse, with nothing to do here.
                "sslcrl" | "sslnegotiation" | "sslsni" | "sslcompression" => {}
                _ => kept.push((name.into_owned(), value.into_owned())),
            }
        }
        if mode == SslMode::Require && root_certificate.is_some() {
            mode = SslMode::VerifyCa;
        }
        let driver_mode = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        };
        // A dead network path is noticed by the kernel, unless the URL says otherwise: a
        // connection attempt gives up after 5 s, and an open connection whose data goes
        // unacknowledged for 15 s, or that stays silent to keepalives, is closed.
        for (name, value) in [
            ("connect_timeout", "5"),
            ("keepalives_idle", "10"),
            ("keepalives_interval", "5"),
            ("keepalives_retries", "3"),
            ("tcp_user_timeout", "15"),
        ] {
            if !kept.iter().any(|(kept_name, _)| kept_name == name) {
                kept.push((name.to_owned(), value.to_owned()));
            }
        }
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("sslmode", driver_mode);
        let tls = match mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(unverified()),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = match &root_certificate {
                    Some(path) if path != "system" => roots_from(path)?,
                    _ => RootCertStore {
                        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                    },
                };
                Some(verified(roots, mode == SslMode::VerifyFull)?)
            }
        };
        Ok(Self {
            driver_url: url.to_string(),
            mode,
            tls,
        })
    }

    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// A new connection.
    pub async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        let refused = |error: tokio_postgres::Error| {
            diesel::ConnectionError::BadConnection(error_chain(&error))
        };
        match &self.tls {
            None => {
                let (client, connection) =
                    tokio_postgres::connect(&self.driver_url, tokio_postgres::NoTls)
                        .await
                        .map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = tokio_postgres::connect(&self.driver_url, tls.clone())
                    .await
                    .map_err(refused)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

/// An error and its causes, on one line (the TLS reason is a cause of the driver's error).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = inner.source();
    }
    text
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots_from(path: &str) -> Result<RootCertStore, InvalidTlsSettings> {
    let invalid = |reason: String| InvalidTlsSettings::RootCertificate {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|error| invalid(error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| invalid(error.to_string()))?;
    if certificates.is_empty() {
        return Err(invalid("no certificate in the file".into()));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| invalid(error.to_string()))?;
    }
    Ok(roots)
}

fn connector(verifier: Arc<dyn ServerCertVerifier>) -> MakeRustlsConnect {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth()
        });
    // The default protocol versions are always available with ring.
    let config = config.unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    });
    MakeRustlsConnect::new(config)
}

fn verified(
    roots: RootCertStore,
    check_name: bool,
) -> Result<MakeRustlsConnect, InvalidTlsSettings> {
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|error| InvalidTlsSettings::RootCertificate {
            path: "sslrootcert".into(),
            reason: error.to_string(),
        })?;
    Ok(connector(Arc::new(CertificateCheck { webpki, check_name })))
}

fn unverified() -> MakeRustlsConnect {
    connector(Arc::new(NoCertificateCheck(provider())))
}

/// `verify-ca` and `verify-full`: the chain, and for `verify-full` the host's name.
#[derive(Debug)]
struct CertificateCheck {
    webpki: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for CertificateCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a root certificate: encrypted, not authenticated (libpq's
/// meaning). The handshake's signatures are still checked.
#[derive(Debug)]
struct NoCertificateCheck(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tls_settings_are_taken_off_the_url_for_the_driver() {
        let target = PostgresTarget::from_url(
            "postgres://u:p@db.example.com:5432/app?sslmode=require&application_name=nb",
        )
        .unwrap();
        assert_eq!(target.mode(), SslMode::Require);
        assert_eq!(
            target.driver_url,
            "postgres://u:p@db.example.com:5432/app?application_name=nb&connect_timeout=5\
             &keepalives_idle=10&keepalives_interval=5&keepalives_retries=3\
             &tcp_user_timeout=15&sslmode=require"
        );
        let plain =
            PostgresTarget::from_url("postgres://u@localhost/app?connect_timeout=30").unwrap();
        assert_eq!(plain.mode(), SslMode::Prefer);
        assert!(plain.driver_url.contains("connect_timeout=30&"));
        assert!(!plain.driver_url.contains("connect_timeout=5"));
        assert!(plain.driver_url.ends_with("&sslmode=prefer"));
        let full = PostgresTarget::from_url("postgres://u@db.example.com/app?sslmode=verify-full")
            .unwrap();
        assert_eq!(full.mode(), SslMode::VerifyFull);
        assert!(full.driver_url.ends_with("&sslmode=require"));
        let disabled = PostgresTarget::from_url("postgres://u@h/app?sslmode=disable").unwrap();
        assert!(disabled.tls.is_none());
    }

    #[test]
    fn bad_tls_settings_are_clear_errors() {
        let mode = PostgresTarget::from_url("postgres://u@h/app?sslmode=always").unwrap_err();
        assert!(mode.to_string().contains("\"always\""), "{mode}");
        let missing =
            PostgresTarget::from_url("postgres://u@h/app?sslmode=verify-ca&sslrootcert=/nope.pem")
                .unwrap_err();
        assert!(missing.to_string().contains("/nope.pem"), "{missing}");
        let client = PostgresTarget::from_url("postgres://u@h/app?sslcert=/c.pem").unwrap_err();
        assert!(client.to_string().contains("sslcert"), "{client}");
    }
}
