//! The per-connection part of admission: a cap on open connections and a
//! timeout for connections that send nothing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tessera_security::tls::{Conn, Incoming, Peer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt as _};
use tonic::transport::server::Connected;

use super::{ServingLimits, CONNECTIONS, REFUSED};

/// `incoming` with at most `limits.max_connections` connections open at
/// once (one more is closed as soon as it is accepted) and every
/// connection closed once it has sent nothing for `limits.idle_timeout_ms`.
pub fn limit_connections(
    incoming: Incoming,
    limits: &ServingLimits,
) -> impl Stream<Item = io::Result<Admitted>> {
    super::describe();
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let idle = limits.idle_timeout();
    incoming.filter_map(move |accepted| {
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) => return Some(Err(e)),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics::counter!(REFUSED, "reason" => "connections").increment(1);
            tracing::warn!(
                remote = ?conn.connect_info().remote,
                "connection closed: {max} are open (serving.max_connections)"
            );
            return None;
        };
        metrics::gauge!(CONNECTIONS).increment(1.0);
        Some(Ok(Admitted {
            conn,
            _slot: Slot(permit),
            idle,
            last_read: Instant::now(),
            timer: Box::pin(tokio::time::sleep(idle)),
        }))
    })
}

/// A connection's place among the open ones.
struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS).decrement(1.0);
    }
}

/// An admitted connection: its place, and when it last sent something.
pub struct Admitted {
    conn: Conn,
    _slot: Slot,
    idle: Duration,
    last_read: Instant,
    /// Fires at the earliest moment the connection could have been idle
    /// long enough; re-armed from the last read when it fires too early.
    timer: Pin<Box<Sleep>>,
}

impl Connected for Admitted {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.conn.connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.conn).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                return Poll::Ready(r);
            }
            Poll::Pending => {}
        }
        loop {
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = this.last_read + this.idle;
            if Instant::now() >= due {
                tracing::debug!(
                    remote = ?this.conn.connect_info().remote,
                    "connection closed: it sent nothing for {:?} (serving.idle_timeout_ms)",
                    this.idle
                );
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection sent nothing within the idle timeout",
                )));
            }
            this.timer.as_mut().reset(due);
        }
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}
