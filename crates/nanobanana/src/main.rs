//! `nanobanana`: the server binary.

use std::process::ExitCode;

/// jemalloc, not the system's malloc: after a burst of large requests it gives the memory back
/// within seconds (glibc's per-thread arenas kept hundreds of MiB; see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use nanobanana::config::Config;
use nanobanana::startup::Application;
use nanobanana::telemetry::init_tracing;
use nb_api::error::cause_chain;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck();
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("nanobanana: {error}");
            return ExitCode::from(2);
        }
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if let [admin, release, email] = arguments.as_slice()
        && admin == "admin"
        && release == "release"
    {
        return release_admin_email(&config, email).await;
    }
    if !arguments.is_empty() {
        eprintln!(
            "nanobanana: unknown command {:?}; commands: (none) to serve, `healthcheck`, \
             `admin release <email>`",
            arguments.join(" ")
        );
        return ExitCode::from(2);
    }
    init_tracing(config.log_format);
    let listen = config.server.listen.as_str().to_owned();
    let application = match Application::build(config).await {
        Ok(application) => application,
        Err(error) => {
            tracing::error!(error = %cause_chain(&error), "cannot start");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(address = %listen, port = application.port(), "listening");
    match application.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %cause_chain(&error), "server failed");
            ExitCode::FAILURE
        }
    }
}

/// `nanobanana admin release <email>`: the next account that holds this admin email becomes
/// the admin (after the account it was bound to was erased).
async fn release_admin_email(config: &Config, email: &str) -> ExitCode {
    match nanobanana::startup::release_admin_email(config, email).await {
        Ok(true) => {
            println!(
                "{email}: released; the next account that holds it and calls an admin route is its admin"
            );
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("{email}: not bound to any account; nothing to release");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("nanobanana: {}", cause_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// `nanobanana healthcheck`: exit 0 when `GET /healthz` on the configured address answers
/// 200. For container health checks in images that have no shell or curl.
fn healthcheck() -> ExitCode {
    use std::io::{Read, Write};
    let listen = Config::from_env().map_or_else(
        |_| nb_api::settings::DEFAULT_LISTEN.to_owned(),
        |config| config.server.listen.as_str().to_owned(),
    );
    let address = listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]");
    let answer = std::net::TcpStream::connect(&address).and_then(|mut stream| {
        stream.set_read_timeout(Some(std::time::Duration::from_secs(3)))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head)
    });
    match answer {
        Ok(head) if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
