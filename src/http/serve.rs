//! Accepting and holding client connections, so that slow or idle clients cannot hold the
//! server: every connection is on a clock, and the number of them is capped.
//!
//! - A connection that has not sent a whole request head within `header_read_timeout` of
//!   opening (hyper's timer, and the reaper for one that sends nothing at all), or that sits
//!   idle between requests for `idle_timeout`, is closed.
//! - A response the client stops reading for `send_timeout` closes its connection; dropping the
//!   response drops the upstream request and releases its reservation.
//! - At `max_connections`, or when the process runs out of file descriptors, a new connection
//!   takes the place of the one that has waited longest without a request in progress; when
//!   every connection is busy, the new one is closed (shed) rather than queued.
//!
//! Body reads are bounded by the handlers (`body_read_timeout`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The clocks and the cap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
}

/// How often the reaper looks at every connection.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// One connection as the reaper sees it. Times are milliseconds since the server started.
struct Conn {
    /// Requests in progress (dispatched, response not yet fully sent).
    active: AtomicU32,
    /// Requests answered.
    served: AtomicU32,
    /// When the connection opened or last finished a response.
    idle_since: AtomicU64,
    /// When a response body last produced a frame the client has not taken yet (0: none).
    blocked_since: AtomicU64,
    close: CancellationToken,
}

/// Every open connection.
struct Conns {
    started: Instant,
    all: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Conns {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn len(&self) -> usize {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Close the connection that has waited longest without a request in progress; whether
    /// there was one.
    fn evict_stalest(&self) -> bool {
        let all = self.all.lock().unwrap_or_else(|e| e.into_inner());
        let stalest = all
            .values()
            .filter(|c| c.active.load(Ordering::Relaxed) == 0 && !c.close.is_cancelled())
            .min_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        match stalest {
            Some(c) => {
                c.close.cancel();
                true
            }
            None => false,
        }
    }

    /// Close what has run out of time.
    fn reap(&self, limits: &Limits) {
        let now = self.now();
        let ms = |d: Duration| d.as_millis() as u64;
        for c in self.all.lock().unwrap_or_else(|e| e.into_inner()).values() {
            let expired = if c.active.load(Ordering::Relaxed) == 0 {
                let limit = if c.served.load(Ordering::Relaxed) == 0 {
                    limits.header_read_timeout
                } else {
                    limits.idle_timeout
                };
                now.saturating_sub(c.idle_since.load(Ordering::Relaxed)) > ms(limit)
            } else {
                let blocked = c.blocked_since.load(Ordering::Relaxed);
                blocked != 0 && now.saturating_sub(blocked) > ms(limits.send_timeout)
            };
            if expired {
                c.close.cancel();
            }
        }
    }
}

/// Whether an accept error means the process (or system) is out of file descriptors.
fn out_of_files(e: &std::io::Error) -> bool {
    // EMFILE and ENFILE.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Spawns what hyper runs beside a connection (HTTP/2 streams) as event-loop work, so the
/// `offload` guard sees it as it sees the connection itself.
#[derive(Clone, Copy)]
pub struct LoopExecutor;

impl<F> hyper::rt::Executor<F> for LoopExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(crate::offload::on_loop(fut));
    }
}

/// Serve `app` on `listener` until `shutdown` is cancelled; then let in-flight requests finish
/// for at most `grace`.
pub async fn run(
    app: axum::Router,
    listener: TcpListener,
    limits: Limits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let conns = Arc::new(Conns {
        started: Instant::now(),
        all: Mutex::new(HashMap::new()),
    });
    let tasks = TaskTracker::new();
    let reaper = {
        let (conns, stop) = (Arc::clone(&conns), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REAP_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => conns.reap(&limits),
                    _ = stop.cancelled() => break,
                }
            }
        })
    };
    let mut builder = auto::Builder::new(LoopExecutor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if out_of_files(&e) => {
                // Make room: the stalest idle connection goes. Give its task a moment to close.
                let freed = conns.evict_stalest();
                tracing::warn!(freed, "out of file descriptors; shedding a connection");
                tokio::time::sleep(Duration::from_millis(if freed { 5 } else { 50 })).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if conns.len() >= limits.max_connections && !conns.evict_stalest() {
            // Every connection is busy with a request: this one is shed.
            drop(tcp);
            continue;
        }
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        next_id += 1;
        let id = next_id;
        let conn = Arc::new(Conn {
            active: AtomicU32::new(0),
            served: AtomicU32::new(0),
            idle_since: AtomicU64::new(conns.now()),
            blocked_since: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        conns
            .all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&conn));
        let (app, builder, conns, stop) = (
            app.clone(),
            Arc::clone(&builder),
            Arc::clone(&conns),
            shutdown.clone(),
        );
        tasks.spawn(crate::offload::on_loop(async move {
            serve_one(tcp, peer, app, &builder, &conns, &conn, stop).await;
            conns
                .all
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }));
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
        for c in conns.all.lock().unwrap_or_else(|e| e.into_inner()).values() {
            c.close.cancel();
        }
    }
    reaper.abort();
}

/// One connection, until it ends, the reaper closes it, or shutdown finishes it gracefully.
async fn serve_one(
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: axum::Router,
    builder: &auto::Builder<LoopExecutor>,
    conns: &Arc<Conns>,
    conn: &Arc<Conn>,
    shutdown: CancellationToken,
) {
    let service = {
        let (conns, conn) = (Arc::clone(conns), Arc::clone(conn));
        hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            // Who is asking: the login slow-down counts per address.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            conn.active.fetch_add(1, Ordering::Relaxed);
            conn.blocked_since.store(0, Ordering::Relaxed);
            let mut app = app.clone();
            // Ends the request whenever it ends: its body done, or the future dropped.
            let guard = Request {
                conns: Arc::clone(&conns),
                conn: Arc::clone(&conn),
            };
            async move {
                let resp = tower_service::Service::call(&mut app, req.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp.map(|inner| Tracked {
                    inner,
                    request: Some(guard),
                }))
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = conn.close.cancelled() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = conn.close.cancelled() => {}
            }
        }
    }
}

/// A request in progress on a connection; when dropped, the connection is idle again.
struct Request {
    conns: Arc<Conns>,
    conn: Arc<Conn>,
}

impl Drop for Request {
    fn drop(&mut self) {
        let c = &self.conn;
        c.blocked_since.store(0, Ordering::Relaxed);
        c.idle_since.store(self.conns.now(), Ordering::Relaxed);
        c.served.fetch_add(1, Ordering::Relaxed);
        c.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that tells its connection when it waits on the client and when it is done.
struct Tracked {
    inner: axum::body::Body,
    /// Dropped when the body ends (or is dropped).
    request: Option<Request>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(request) = &self.request else {
            return Poll::Ready(None);
        };
        // Asked for more: the client took what came before.
        request.conn.blocked_since.store(0, Ordering::Relaxed);
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if let Some(r) = &self.request {
                    r.conn.blocked_since.store(r.conns.now(), Ordering::Relaxed);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.request = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.request.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Collect a request body, all of it within `timeout`.
pub async fn collect_within(
    body: http_body_util::Limited<axum::body::Body>,
    timeout: Duration,
) -> Option<Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> {
    tokio::time::timeout(timeout, body.collect())
        .await
        .ok()
        .map(|r| r.map(|c| c.to_bytes()))
}
