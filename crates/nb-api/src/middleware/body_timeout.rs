//! A request body must keep coming, and come whole in time: when no piece of it arrives for
//! `client_body_timeout` (like nginx's `client_body_timeout`), or all of it has not arrived
//! `client_body_deadline` after the request's head, reading it fails with 408 and the
//! connection is closed — so a client that trickles a byte every few seconds cannot hold a
//! connection, a worker's attention and a growing buffer for ever.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// The request body, failing with `TimedOut` when a gap between two pieces is too long.
#[allow(missing_debug_implementations)] // The payload stream has no Debug.
pub struct TimedBody {
    inner: Payload,
    gap: Duration,
    /// When the whole body must have arrived.
    ends_at: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    /// `gap`: the longest pause between two pieces; `whole`: the longest the whole body may
    /// take, from now.
    pub fn new(inner: Payload, gap: Duration, whole: Duration) -> Self {
        let now = Instant::now();
        let ends_at = now + whole;
        Self {
            inner,
            gap,
            ends_at,
            deadline: Box::pin(tokio::time::sleep_until((now + gap).min(ends_at))),
        }
    }
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next_deadline = (Instant::now() + self.gap).min(self.ends_at);
                self.deadline.as_mut().reset(next_deadline);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(
                    std::io::ErrorKind::TimedOut.into(),
                )))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// Whether a body read failed because the client stopped sending.
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}
