//! `nanobanana`: the server binary.

use std::process::ExitCode;

use nb_http::config::Config;
use nb_http::error::cause_chain;
use nb_http::startup::Application;
use nb_http::telemetry::init_tracing;

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("nanobanana: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_format);
    let listen = config.listen.clone();
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
