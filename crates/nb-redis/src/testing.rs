//! A throwaway `redis-server` for tests: started on a free loopback port with nothing saved
//! to disk, killed when dropped. `scripts/test.sh` installs Debian's `redis-server` when it
//! is missing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct EphemeralRedis {
    pub url: String,
    pub port: u16,
    process: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("no free loopback port")
}

impl EphemeralRedis {
    /// Starts a server and waits until it accepts connections.
    ///
    /// # Panics
    /// When `redis-server` is not installed (run the tests with `scripts/test.sh`, which
    /// installs it) or does not start within 10 s.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` (to restart one where its clients expect it).
    ///
    /// # Panics
    /// As [`EphemeralRedis::start`].
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, None)
    }

    /// Starts a server that requires `password` (`requirepass`); its URL carries it.
    ///
    /// # Panics
    /// As [`EphemeralRedis::start`].
    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(free_port(), Some(password))
    }

    fn start_with(port: u16, password: Option<&str>) -> Self {
        let mut command = Command::new("redis-server");
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let process = command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server is not installed: run the tests with scripts/test.sh, which \
                 installs Debian's redis-server",
            );
        let credentials = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let server = Self {
            url: format!("redis://{credentials}127.0.0.1:{port}"),
            port,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Stops the server at once (as a crash would).
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server's process: its connections stay
    /// open and nothing answers, as on a hung host.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &self.process.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "could not signal redis-server");
    }
}

impl Drop for EphemeralRedis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill();
    }
}
