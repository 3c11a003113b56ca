//! Building the application: a function a test can call as well as `main`.

use std::net::{SocketAddr, TcpListener, ToSocketAddrs as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nb_api::{Server, serve};
use nb_db::Database;
use nb_domain::accounts::UserRepository;
use nb_domain::admin::AdminEmails;
use nb_domain::admin::AdminRepository;
use nb_domain::generation::JobService;
use nb_domain::system::Clock;
use nb_domain::webhooks::WebhookService;
use nb_system::SystemClock;
use socket2::{Domain, Protocol, Socket, Type};

use crate::background::Maintenance;
use crate::config::Config;
use crate::error::StartupError;
use crate::wiring::{Wired, wire};

/// A bound, ready-to-run server.
pub struct Application {
    port: u16,
    server: Server,
    maintenance: Maintenance,
    jobs: Arc<JobService>,
    webhooks: Arc<WebhookService>,
    draining: Arc<AtomicBool>,
    drain: Duration,
    /// How long requests in flight (and jobs being run) get once the listener closes.
    grace: Duration,
}

impl Application {
    /// Connects to the database (running migrations), wires the services and binds the port.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let url = config.database_url();
        tracing::info!(database = %url, "opening the database");
        let database = Database::connect(&url, config.database.pool_options()).await?;
        warn_of_admin_emails_without_their_account(&database, &config.security.admin_emails.0)
            .await;
        Self::build_with_database(config, database)
    }

    /// As [`Application::build`], on a database that is already open and migrated.
    pub fn build_with_database(config: Config, database: Database) -> Result<Self, StartupError> {
        let listen = config.server.listen.as_str();
        let listener = bind(listen)?;
        let bind_error = |source| StartupError::Bind {
            address: listen.to_owned(),
            source,
        };
        let address = listener.local_addr().map_err(bind_error)?;
        let Wired {
            state,
            maintenance,
            jobs,
            webhooks,
        } = wire(&config, database, address, Arc::new(SystemClock))?;
        let draining = state.draining.clone();
        // Signals are the application's (see `run_until_stopped`), not actix's.
        let server = serve(listener, state, |_| {}).map_err(bind_error)?;
        Ok(Self {
            port: address.port(),
            server,
            maintenance,
            jobs,
            webhooks,
            draining,
            drain: config.server.shutdown_drain,
            grace: config.server.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM). Then `/readyz` answers 503
    /// for `NB_SHUTDOWN_DRAIN_SECONDS` while requests are still served (a load balancer takes
    /// the instance out), the listener closes, requests in flight get up to
    /// `NB_SHUTDOWN_GRACE_SECONDS`, and what is still only in memory (the keys' last uses) is
    /// written. The job workers stop taking jobs when the drain begins and get the same grace
    /// to finish the ones they hold; a job still running after it is taken again by another
    /// instance (or this one, restarted) once its lease runs out.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.maintenance.spawn();
        let (stop_jobs, workers) = start_workers(&self.jobs, &self.webhooks);
        let handle = self.server.handle();
        let mut server = std::pin::pin!(self.server);
        let served = tokio::select! {
            served = &mut server => served,
            () = shutdown_requested() => {
                self.draining.store(true, Ordering::SeqCst);
                let _ = stop_jobs.send(true);
                tracing::info!(drain = ?self.drain, "shutting down: draining");
                tokio::time::sleep(self.drain).await;
                // The server future carries out the stop: poll both.
                let ((), served) = tokio::join!(handle.stop(true), server);
                served
            }
        };
        let _ = stop_jobs.send(true);
        if tokio::time::timeout(self.grace, workers.join_all())
            .await
            .is_err()
        {
            tracing::warn!(
                "jobs still running at shutdown: they will be taken again after their lease"
            );
        }
        self.maintenance.at_shutdown().await;
        served
    }
}

/// This instance's job workers (`NB_JOB_WORKERS`), its webhook deliverer and the
/// queue-depth gauge on the current runtime, until told to stop (or the sender is dropped).
pub fn start_workers(
    jobs: &Arc<JobService>,
    webhooks: &Arc<WebhookService>,
) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    {
        let (webhooks, stopped) = (webhooks.clone(), stopped.clone());
        workers.spawn(async move { webhooks.deliver(stopped).await });
    }
    let count = jobs.settings().workers;
    for _ in 0..count {
        let (jobs, stopped) = (jobs.clone(), stopped.clone());
        workers.spawn(async move { jobs.work(stopped).await });
    }
    // Every instance, workers or not: overdue jobs fail on time, and the depth is reported.
    {
        let jobs = jobs.clone();
        let mut stopped = stopped;
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(jobs.settings().poll_interval);
            let mut depth = tokio::time::interval(JOB_DEPTH_INTERVAL);
            loop {
                tokio::select! {
                    _ = sweep.tick() => jobs.expire_overdue().await,
                    _ = depth.tick() => jobs.report_depth().await,
                    _ = stopped.changed() => return,
                }
            }
        });
    }
    (stop, workers)
}

/// How often the queue's depth is read for the metrics.
const JOB_DEPTH_INTERVAL: Duration = Duration::from_secs(15);

/// Every adapter wired, on `database`, telling time by `clock`: for tests that serve the
/// app themselves (with routes of their own) and move the clock.
pub fn wire_with_clock(
    config: &Config,
    database: Database,
    bound_to: SocketAddr,
    clock: Arc<dyn Clock>,
) -> Result<Wired, StartupError> {
    wire(config, database, bound_to, clock)
}

/// SIGTERM or SIGINT.
async fn shutdown_requested() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Without email verification, an admin email nobody registered yet goes to whoever
/// registers it first: say so at every start until the operator has. An email that has an
/// account is bound to it now (the first account that held it); one held by a newer account
/// than the one it is bound to (an erased admin's) is no admin's: say that too.
async fn warn_of_admin_emails_without_their_account(database: &Database, admins: &AdminEmails) {
    for email in admins.iter() {
        match database.find_user_by_email(email).await {
            Ok(None) => tracing::warn!(
                %email,
                "NB_ADMIN_EMAILS names an email with no account: register it now, before \
                 anyone else does"
            ),
            Ok(Some(holder)) => {
                let now = SystemClock.now();
                let bound = database.bind_admin_email(email, holder.user.id, now).await;
                if let Ok(bound) = bound
                    && bound != holder.user.id
                {
                    tracing::warn!(
                        %email,
                        "NB_ADMIN_EMAILS names an email whose account is not the one it was \
                         bound to (that one was erased): it is no admin until you run \
                         `nanobanana admin release <email>`"
                    );
                }
            }
            Err(_) => {}
        }
    }
}

/// `nanobanana admin release <email>`: the operator hands an admin email to whichever
/// account holds it next (after the account it was bound to was erased). Whether a binding
/// was released.
pub async fn release_admin_email(config: &Config, raw: &str) -> Result<bool, StartupError> {
    let email = nb_domain::accounts::EmailAddress::parse(raw)
        .map_err(|_| StartupError::NotAnEmail(raw.to_owned()))?;
    let database =
        Database::connect(&config.database_url(), config.database.pool_options()).await?;
    database
        .release_admin_email(&email)
        .await
        .map_err(StartupError::Repository)
}

/// Connections the kernel queues for the server before it accepts them (capped by
/// `net.core.somaxconn`). `std`'s `TcpListener::bind` queues 128: a burst of a few thousand
/// new clients then had SYNs dropped and waited out 1 s and 3 s retransmissions.
pub const LISTEN_BACKLOG: i32 = 8192;

/// Listens on `address` (the first of its resolutions that works), with [`LISTEN_BACKLOG`].
pub fn bind(address: &str) -> Result<TcpListener, StartupError> {
    let failed = |source| StartupError::Bind {
        address: address.to_owned(),
        source,
    };
    let mut last_error = None;
    for candidate in address.to_socket_addrs().map_err(failed)? {
        match listen_on(candidate) {
            Ok(listener) => return Ok(listener),
            Err(error) => last_error = Some(error),
        }
    }
    Err(failed(last_error.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    })))
}

fn listen_on(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // As `std` does: a restarted server can listen again at once.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's accept queue for the server's socket is the one asked for (as `ss` reads
    /// it: a listening socket's Send-Q is its backlog), not `std`'s 128.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_listener_queues_a_burst_of_connections() {
        let listener = bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shown = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) lists listening sockets");
        let line = String::from_utf8(shown.stdout).unwrap();
        let backlog: i32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        let somaxconn: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(backlog, LISTEN_BACKLOG.min(somaxconn), "{line}");
        assert!(backlog > 128, "{line}");
    }
}
