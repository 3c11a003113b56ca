//! Connections to Google: a few HTTP/2 connections per thread, one more whenever the open
//! ones have no stream left.
//!
//! Over HTTPS, Google negotiates HTTP/2, and its front ends let one connection carry about 100
//! streams at once. A single pooled connection (what one `reqwest::Client` keeps per host)
//! would queue every call past the 100th inside the client, however many the instance may
//! have in flight. So each [`reqwest::Client`] here is one connection's worth of streams, and
//! a call takes the first client with a stream to spare, or a new client.
//!
//! The clients are kept per thread: the server's workers each run a single-threaded runtime,
//! and a connection's task runs on the runtime that opened it. A 1.5 MB image arrives as ~128
//! HTTP/2 frames, each of which wakes the call it belongs to; on the thread that is already
//! running, that is a queue push, on another one a system call and a context switch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::ThreadId;

/// Builds one more client (with its own connection pool).
pub(crate) type MakeClient = Box<dyn Fn() -> reqwest::Result<reqwest::Client> + Send + Sync>;

pub(crate) struct Connections {
    make: MakeClient,
    /// The client built at start-up: used by the first thread to call, and by any thread
    /// when no other client can be built.
    first: Arc<Connection>,
    streams_per_connection: usize,
    by_thread: Mutex<HashMap<ThreadId, Vec<Arc<Connection>>>>,
}

struct Connection {
    http: reqwest::Client,
    in_flight: AtomicUsize,
}

/// A stream on one of the connections, given back when dropped.
pub(crate) struct Lease {
    connection: Arc<Connection>,
}

impl Lease {
    pub fn http(&self) -> &reqwest::Client {
        &self.connection.http
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.connection.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connections {
    /// `first` is a client already built (so configuration errors surface at start-up).
    pub fn new(first: reqwest::Client, make: MakeClient, streams_per_connection: usize) -> Self {
        Self {
            make,
            first: Arc::new(Connection::new(first)),
            streams_per_connection: streams_per_connection.max(1),
            by_thread: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Vec<Arc<Connection>>>> {
        self.by_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A stream on this thread's first connection with one to spare, on a new connection if
    /// none has, or (if a client cannot be built) on the least busy one.
    pub fn lease(&self) -> Lease {
        let thread = std::thread::current().id();
        let spare = {
            let mut by_thread = self.lock();
            let first_call = by_thread.is_empty();
            let mine = by_thread.entry(thread).or_default();
            if first_call {
                mine.push(self.first.clone());
            }
            mine.iter()
                .find(|connection| {
                    connection.in_flight.load(Ordering::Relaxed) < self.streams_per_connection
                })
                .cloned()
        };
        let connection = match spare {
            Some(connection) => connection,
            // Built outside the lock (a client loads its TLS roots), so other threads lease
            // meanwhile. Only this thread adds to its own list, and it is busy here.
            None => match (self.make)() {
                Ok(http) => {
                    let connection = Arc::new(Connection::new(http));
                    let mut by_thread = self.lock();
                    let mine = by_thread.entry(thread).or_default();
                    mine.push(connection.clone());
                    tracing::debug!(
                        connections = mine.len(),
                        "every connection to the provider is at its stream limit: one more"
                    );
                    connection
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot open one more connection to the provider");
                    let by_thread = self.lock();
                    by_thread
                        .get(&thread)
                        .and_then(|mine| {
                            mine.iter().min_by_key(|connection| {
                                connection.in_flight.load(Ordering::Relaxed)
                            })
                        })
                        .unwrap_or(&self.first)
                        .clone()
                }
            },
        };
        connection.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease { connection }
    }

    /// Connections opened on the calling thread (for tests).
    #[cfg(test)]
    pub fn on_this_thread(&self) -> usize {
        self.lock()
            .get(&std::thread::current().id())
            .map_or(0, Vec::len)
    }
}

impl Connection {
    fn new(http: reqwest::Client) -> Self {
        Self {
            http,
            in_flight: AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections(streams: usize) -> Connections {
        Connections::new(
            reqwest::Client::new(),
            Box::new(|| reqwest::Client::builder().build()),
            streams,
        )
    }

    #[test]
    fn a_connection_is_opened_when_every_stream_is_taken_and_reused_after() {
        let connections = connections(3);
        let first: Vec<Lease> = (0..3).map(|_| connections.lease()).collect();
        assert_eq!(connections.on_this_thread(), 1);
        let fourth = connections.lease();
        assert_eq!(connections.on_this_thread(), 2);
        assert!(
            first
                .iter()
                .all(|lease| Arc::ptr_eq(&lease.connection, &first[0].connection))
        );
        assert!(!Arc::ptr_eq(&fourth.connection, &first[0].connection));
        drop(first);
        // Streams given back are used again before any new connection.
        let again: Vec<Lease> = (0..5).map(|_| connections.lease()).collect();
        assert_eq!(connections.on_this_thread(), 2);
        drop(again);
        drop(fourth);
    }

    #[test]
    fn each_thread_gets_its_own_connections() {
        let connections = Arc::new(connections(100));
        let here = connections.lease();
        let there = {
            let connections = connections.clone();
            std::thread::spawn(move || {
                let lease = connections.lease();
                (connections.on_this_thread(), lease.connection.clone())
            })
            .join()
            .unwrap()
        };
        assert_eq!(there.0, 1);
        assert!(!Arc::ptr_eq(&here.connection, &there.1));
    }
}
