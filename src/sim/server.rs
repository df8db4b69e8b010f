//! The socket side: the accept loop (which closes and re-binds the listener for down time),
//! one hyper connection per accepted socket, and the per-connection reset.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt as _;

/// Whether the server should be listening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Power {
    Up,
    Down,
    /// Down until this instant, then up.
    DownUntil(Instant),
}

/// What the [`Sim`](super::Sim) asks for; `generation` counts the requests.
#[derive(Debug, Clone, Copy)]
pub(super) struct Command {
    pub(super) generation: u64,
    pub(super) power: Power,
}

/// What the accept loop has done: the last command it applied and whether it listens.
#[derive(Debug, Clone, Copy)]
pub(super) struct Applied {
    pub(super) generation: u64,
    pub(super) listening: bool,
}

/// How long to wait before retrying a failed bind or accept.
const RETRY: Duration = Duration::from_millis(10);

/// Binds a listener with `SO_REUSEADDR`, so the same port can be bound again while closed
/// connections linger in `TIME_WAIT`.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    reserve(addr)?.listen(1024)
}

/// A socket bound to `addr` with `SO_REUSEADDR` and not listening. While the sim is down it
/// holds the port: connections to it are refused, and the kernel does not hand the port to
/// another socket that binds port 0 meanwhile (another sim, a proxy under test), so "down"
/// never turns into "some other server answers" in tests that run side by side. A listener
/// can bind the same port while it is held.
pub(super) fn reserve(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// The accept loop. It owns the listener (or, while down, the socket that holds the port) and
/// every connection task, so aborting it closes the port and every connection.
pub(super) async fn run(
    addr: SocketAddr,
    mut listener: Option<TcpListener>,
    mut held: Option<TcpSocket>,
    router: Router,
    mut commands: watch::Receiver<Command>,
    applied: watch::Sender<Applied>,
) {
    let mut conns = JoinSet::new();
    loop {
        let Command { generation, power } = *commands.borrow_and_update();
        let wake_at = match power {
            Power::DownUntil(at) if at > Instant::now() => Some(at),
            _ => None,
        };
        let want_up = match power {
            Power::Up => true,
            Power::Down => false,
            Power::DownUntil(_) => wake_at.is_none(),
        };
        if want_up && listener.is_none() {
            match bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    // Listening now: the port is held by the listener.
                    drop(held.take());
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "sim: re-binding the listener failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            }
        } else if !want_up && listener.is_some() {
            // Nothing listening: new connections are refused, open ones are closed.
            listener = None;
            conns.abort_all();
            // Hold the port until the sim comes back (if this fails, it is merely unheld).
            held = reserve(addr).ok();
        }
        let now = Applied {
            generation,
            listening: listener.is_some(),
        };
        applied.send_if_modified(|a| {
            let changed = (a.generation, a.listening) != (now.generation, now.listening);
            *a = now;
            changed
        });
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(tcp) => {
                    conns.spawn(serve_connection(tcp, router.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sim: accept failed");
                    tokio::time::sleep(RETRY).await;
                }
            },
            changed = commands.changed() => {
                if changed.is_err() {
                    return; // the Sim is gone
                }
            }
            () = sleep_until(wake_at) => {}
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(l) => l.accept().await.map(|(tcp, _)| tcp),
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One connection: HTTP/1.1 until the client closes, the sim shuts down, or a handler asks
/// for a reset.
async fn serve_connection(tcp: TcpStream, router: Router) {
    // Without it the last chunk of a response can wait ~40 ms for the client's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let conn = Arc::new(Conn::default());
    let io = TokioIo::new(SimStream {
        tcp,
        conn: Arc::clone(&conn),
    });
    let handle = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Arc::clone(&handle));
        router.clone().oneshot(req)
    });
    let http = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        result = http => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "sim: connection ended");
            }
        }
        // Dropping the connection drops the socket, which `SimStream` resets.
        () = conn.reset_requested.notified() => {}
    }
}

/// A handle on one connection, given to handlers as a request extension.
#[derive(Debug, Default)]
pub(super) struct Conn {
    reset: AtomicBool,
    reset_requested: Notify,
}

impl Conn {
    /// Closes the connection with a TCP RST, before anything more is written.
    pub(super) fn reset(&self) {
        self.reset.store(true, Ordering::Release);
        self.reset_requested.notify_one();
    }
}

/// The accepted socket; when its connection asked for a reset, dropping it sends RST.
struct SimStream {
    tcp: TcpStream,
    conn: Arc<Conn>,
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if self.conn.reset.load(Ordering::Acquire) {
            // SO_LINGER 0: close() discards unsent data and sends RST instead of FIN.
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
