//! Two clocks for one HTTP/1.1 connection. hyper's own header-read timeout
//! starts when it begins waiting for a request head, so it is also the time
//! an idle keep-alive connection stays open: with the slow-client bound of
//! 10 s, clients that reuse a pooled connection after 10 s (reqwest keeps
//! them 90 s) race the close and see transport errors. So hyper's timeout is
//! set to the keep-alive idle time, and [`HeadTimed`] enforces the short
//! bound from the first byte of a request head: a slow client that starts a
//! request must finish its headers within `head_timeout`, an idle one may
//! sit quietly until the idle time closes it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests of one connection, as its service sees them.
#[derive(Debug, Default)]
pub struct Requests {
    /// Bumped when a request head was parsed (its service call began).
    started: AtomicU64,
    /// Service calls not yet answered.
    in_flight: AtomicUsize,
}

impl Requests {
    /// Mark a request as started; the guard marks it answered when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request being served (see [`Requests::begin`]).
pub struct InFlight(Arc<Requests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's IO that fails reads with `TimedOut` once a request head
/// has been arriving for longer than `head_timeout`.
pub struct HeadTimed<I> {
    inner: I,
    requests: Arc<Requests>,
    head_timeout: Duration,
    /// Armed when bytes arrive between requests; `started` when armed.
    deadline: Option<(Pin<Box<Sleep>>, u64)>,
}

impl<I> HeadTimed<I> {
    pub fn new(inner: I, requests: Arc<Requests>, head_timeout: Duration) -> Self {
        HeadTimed { inner, requests, head_timeout, deadline: None }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for HeadTimed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let started = this.requests.started.load(Ordering::Relaxed);
        let between = this.requests.in_flight.load(Ordering::Relaxed) == 0;
        // A head that became a request (or any request in flight) ends the clock.
        if !between || this.deadline.as_ref().is_some_and(|(_, at)| *at != started) {
            this.deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if between && this.deadline.is_none() && buf.filled().len() > before {
                    let at = Instant::now() + this.head_timeout;
                    this.deadline = Some((Box::pin(tokio::time::sleep_until(at)), started));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this.deadline.as_mut().is_some_and(|(sleep, _)| sleep.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not sent in time")))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for HeadTimed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_started_head_must_finish_in_time_but_idle_and_in_flight_time_is_free() {
        let (mut client, server) = tokio::io::duplex(64);
        let requests = Arc::new(Requests::default());
        let mut io = HeadTimed::new(server, requests.clone(), Duration::from_secs(10));
        let mut buf = [0u8; 16];

        // Idle for a minute: no clock runs.
        let idle = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(idle.is_err(), "no bytes, no timeout from the wrapper");

        // Bytes of a head arrive, then nothing: the read fails after 10 s.
        client.write_all(b"GET / HT").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 8);
        let t0 = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_that_became_a_request_stops_the_clock() {
        let (mut client, server) = tokio::io::duplex(64);
        let requests = Arc::new(Requests::default());
        let mut io = HeadTimed::new(server, requests.clone(), Duration::from_secs(10));
        let mut buf = [0u8; 64];
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 19);
        // The service starts: a long request (a long poll) reads its body slowly.
        let call = requests.begin();
        tokio::time::sleep(Duration::from_secs(25)).await;
        client.write_all(b"body").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
        let quiet = tokio::time::timeout(Duration::from_secs(40), io.read(&mut buf)).await;
        assert!(quiet.is_err(), "no timeout while a request is in flight");
        drop(call);
        // Answered; the connection idles for a minute, then a new head starts the clock again.
        let idle = tokio::time::timeout(Duration::from_secs(60), io.read(&mut buf)).await;
        assert!(idle.is_err());
        client.write_all(b"GET").await.unwrap();
        assert_eq!(io.read(&mut buf).await.unwrap(), 3);
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
