//! A request body must keep coming: when no piece of it arrives for `client_body_timeout`
//! (like nginx's `client_body_timeout`), reading it fails with 408 and the connection is
//! closed, so a client that sends a head and then trickles nothing cannot hold a connection
//! and a worker's attention for ever.

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
    deadline: Pin<Box<Sleep>>,
}

impl TimedBody {
    pub fn new(inner: Payload, gap: Duration) -> Self {
        Self {
            inner,
            gap,
            deadline: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let next_deadline = Instant::now() + self.gap;
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
