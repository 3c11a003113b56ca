//! Test support for the tests that run the real binary: start it, wait until it answers,
//! signal it, and reap it. (Waiting for any other state is `nb_testkit::eventually`.)

#![allow(dead_code)] // Each test binary uses part of this module.

use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use nanobanana::config::CONFIG_FILE_VARIABLE;
use nanobanana::config::sources::VARIABLES;

/// How often a test looks again while it waits for a state.
pub const POLL: Duration = Duration::from_millis(20);
/// The longest a binary may take to start answering.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `nanobanana`, on a free loopback port with a data folder of its own; killed
/// and reaped when dropped.
pub struct ServerProcess {
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    child: Option<Child>,
    data_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary with no setting from this process's environment, only its port,
    /// its data folder, `RUST_LOG=warn` and output discarded, then what `configure` adds
    /// (settings, piped output); returns once `GET /healthz` answers.
    pub async fn start(configure: impl FnOnce(&mut Command)) -> Self {
        Self::start_as(Command::new(env!("CARGO_BIN_EXE_nanobanana")), configure).await
    }

    /// As [`ServerProcess::start`], under the file-mode creation mask `umask` (through
    /// `sh`, which then becomes the binary: the same process).
    pub async fn start_with_umask(umask: u32, configure: impl FnOnce(&mut Command)) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("umask {umask:03o} && exec \"$0\""))
            .arg(env!("CARGO_BIN_EXE_nanobanana"));
        Self::start_as(command, configure).await
    }

    async fn start_as(mut command: Command, configure: impl FnOnce(&mut Command)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        for variable in VARIABLES {
            command.env_remove(variable.name);
        }
        command
            .env_remove(CONFIG_FILE_VARIABLE)
            .env("NB_LISTEN", format!("127.0.0.1:{port}"))
            .env("NB_DATA_DIR", data_dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        configure(&mut command);
        // Owned before the first wait: a failed start still kills and reaps it.
        let server = Self {
            port,
            base: format!("http://127.0.0.1:{port}"),
            child: Some(command.spawn().unwrap()),
            data_dir,
        };
        let client = reqwest::Client::new();
        let health = format!("{}/healthz", server.base);
        nb_testkit::eventually_true("the server answers", START_TIMEOUT, POLL, || async {
            client.get(&health).send().await.is_ok()
        })
        .await;
        server
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().unwrap()
    }

    /// SIGTERM, as an orchestrator stops it.
    pub fn terminate(&mut self) {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child().id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
    }

    /// Its standard output, when `configure` piped it.
    pub fn take_stdout(&mut self) -> ChildStdout {
        self.child().stdout.take().unwrap()
    }

    /// Waits for it to exit (its data folder stays until this is dropped).
    pub async fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
