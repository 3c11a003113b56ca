//! PostgreSQL over TLS, as managed databases require it: a cluster of its own started with
//! `ssl = on` and a certificate made here (signed by a test CA for `localhost`), reached with
//! each `sslmode`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use nb_db::testing::{EphemeralPostgres, connection_is_encrypted, test_pool_options};
use nb_db::{Database, DatabaseUrl};
use nb_domain::ports::ReadinessCheck;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Authority {
    certificate_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn authority(name: &str) -> Authority {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    Authority {
        certificate_pem: issuer.pem(),
        issuer,
    }
}

async fn connect(url: &str) -> Result<Database, nb_db::ConnectError> {
    Database::connect(&DatabaseUrl::parse(url).unwrap(), test_pool_options()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_connects_as_libpq_would() {
    let ca = authority("nb test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca.issuer)
        .unwrap();
    let cluster = EphemeralPostgres::start_with_tls(&server.pem(), &server_key.serialize_pem());
    let folder = tempfile::tempdir().unwrap();
    let root = folder.path().join("root.crt");
    std::fs::write(&root, &ca.certificate_pem).unwrap();
    let root = root.to_str().unwrap();
    let other_root = folder.path().join("other.crt");
    std::fs::write(&other_root, authority("another CA").certificate_pem).unwrap();
    let other_root = other_root.to_str().unwrap();
    let by_ip = cluster.url.clone();
    let by_name = by_ip.replace("127.0.0.1", "localhost");

    for (url, encrypted) in [
        (format!("{by_ip}?sslmode=disable"), false),
        (by_ip.clone(), true), // prefer, libpq's default
        (format!("{by_ip}?sslmode=require"), true),
        (
            format!("{by_ip}?sslmode=verify-ca&sslrootcert={root}"),
            true,
        ),
        (format!("{by_ip}?sslmode=require&sslrootcert={root}"), true),
        (
            format!("{by_name}?sslmode=verify-full&sslrootcert={root}"),
            true,
        ),
    ] {
        let database = connect(&url)
            .await
            .unwrap_or_else(|error| panic!("{url}: {}", cause_chain_as_logged(&error)));
        database.check_ready().await.unwrap();
        assert_eq!(connection_is_encrypted(&database).await, encrypted, "{url}");
    }

    // The certificate names localhost, not 127.0.0.1: verify-full refuses, and says why.
    let error = connect(&format!("{by_ip}?sslmode=verify-full&sslrootcert={root}"))
        .await
        .unwrap_err();
    let message = cause_chain_as_logged(&error);
    assert!(message.contains("not valid for name"), "{message}");
    // Another authority's root: refused by verify-ca and verify-full, and the message does
    // not show the password (trust authentication ignores it).
    let with_password = by_name.replace("postgres@", "postgres:s3cret-pass@");
    for mode in ["verify-ca", "verify-full"] {
        let error = connect(&format!(
            "{with_password}?sslmode={mode}&sslrootcert={other_root}"
        ))
        .await
        .unwrap_err();
        let message = cause_chain_as_logged(&error);
        assert!(message.contains("UnknownIssuer"), "{mode}: {message}");
        assert!(
            !message.contains("s3cret-pass"),
            "the password leaked: {message}"
        );
    }
}

/// The error and its causes, as the server prints them at start-up.
fn cause_chain_as_logged(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
