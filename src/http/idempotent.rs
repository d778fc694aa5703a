//! `Idempotency-Key` on the inference routes (SPEC 2.8): a retry that does not spend twice.
//!
//! For one client key, a request with a key seen in the last 24 hours and the same route and
//! body gets the first answer again (status, body, the headers of SPEC 2.2, and
//! `Idempotent-Replayed: true`), with no upstream call and no quota spent. A duplicate that
//! arrives while the first is still running waits for it and receives the same answer, a stream
//! from its start: the first request runs in a task of its own, writing its response into a
//! [`Recording`] that the first client and every duplicate read. So a client that times out
//! and retries finds its answer finished rather than started twice. The same key with another
//! body is `422 idempotency_key_reused`; answers that failed (any status but 2xx, or a stream
//! that broke) are not kept, and the retry runs afresh.
//!
//! Kept answers are written to the store (they survive a restart; pruned after 24 hours) and
//! the most recent ones are also held in memory: at most [`MEMORY_BYTES`] of them, and none
//! larger than [`MAX_KEPT`] (a larger answer is still shared with the duplicates in flight, but
//! not kept). An answer in flight is held whole while it runs, so a duplicate can start from
//! its beginning: memory bounded by the requests in flight times the largest answer.
//!
//! With `[cluster]`, a key is also claimed in Redis before it runs, so a duplicate that
//! reaches another replica waits for this one's answer (or is refused) instead of running
//! again ([`crate::cluster::shared`]).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use lru::LruCache;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::cluster::shared::{self, Held, Idem};
use crate::error::ApiError;
use crate::ops::Ops;
use crate::record::Kept;

/// How long an answer is kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// The longest key accepted.
pub const MAX_KEY: usize = 255;
/// Kept answers held in memory at most (the store has them all).
pub const MEMORY_BYTES: usize = 16 << 20;
/// The largest answer kept for a replay.
pub const MAX_KEPT: usize = 8 << 20;
/// Headers replayed with a kept answer.
const REPLAYED: &[&str] = &[
    "content-type",
    "x-routed-via",
    "x-fallback-attempts",
    "x-freeway-cache",
    "request-id",
];

/// Set by a surface on its response when the stream it frames broke: such an answer is not kept.
#[derive(Clone, Default)]
pub struct Broke(pub Arc<std::sync::atomic::AtomicBool>);

/// What the gateway holds of idempotent requests.
pub struct Idempotency {
    ops: Arc<Ops>,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Requests still running, by (client, key).
    running: HashMap<(String, String), (Vec<u8>, Arc<Recording>)>,
    /// Kept answers, most recently used last.
    kept: LruCache<(String, String), Arc<Kept>>,
    kept_bytes: usize,
}

/// One response as it is produced: its head, then its body piece by piece.
pub struct Recording {
    state: Mutex<RecState>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct RecState {
    head: Option<(StatusCode, HeaderMap)>,
    chunks: Vec<Bytes>,
    bytes: usize,
    done: bool,
}

impl Recording {
    fn new() -> Arc<Recording> {
        Arc::new(Recording {
            state: Mutex::default(),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut RecState)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
    }

    /// A recording of a kept answer, already whole.
    fn of(kept: &Kept) -> Arc<Recording> {
        let rec = Recording::new();
        rec.fill(kept, false);
        rec
    }

    /// Write a kept answer whole (`replayed`: saying so in its headers).
    fn fill(&self, kept: &Kept, replayed: bool) {
        let mut headers = HeaderMap::new();
        for (n, v) in &kept.headers {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(n.as_str()), HeaderValue::try_from(v)) {
                headers.insert(n, v);
            }
        }
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
        self.update(|s| {
            s.head = Some((status, headers));
            s.bytes = kept.body.len();
            s.chunks.push(Bytes::from(kept.body.clone()));
            s.done = true;
        });
    }

    /// The response as a reader sees it: once the head is known, the body from its start.
    async fn response(self: Arc<Recording>, replayed: bool) -> Response {
        let mut rx = self.changed.subscribe();
        let head = loop {
            if let Some(h) = self.lock().head.clone() {
                break h;
            }
            if rx.changed().await.is_err() {
                let e = ApiError::UpstreamFailed("the first request of this key went away".into());
                return axum::response::IntoResponse::into_response(e);
            }
        };
        let body =
            futures_util::stream::unfold((self, rx, 0usize), |(rec, mut rx, i)| async move {
                loop {
                    let (next, done) = {
                        let s = rec.lock();
                        (s.chunks.get(i).cloned(), s.done)
                    };
                    if let Some(b) = next {
                        return Some((Ok::<_, std::convert::Infallible>(b), (rec, rx, i + 1)));
                    }
                    if done || rx.changed().await.is_err() {
                        return None;
                    }
                }
            });
        let mut resp = Response::new(Body::from_stream(body));
        *resp.status_mut() = head.0;
        *resp.headers_mut() = head.1;
        if replayed {
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        resp
    }
}

/// The `Idempotency-Key` of a request: `None` when there is none, an error when it is unusable.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v.to_str().map_err(|_| {
        ApiError::InvalidRequest("`Idempotency-Key` must be printable ASCII".into())
    })?;
    let k = k.trim();
    if k.is_empty() || k.len() > MAX_KEY {
        return Err(ApiError::InvalidRequest(format!(
            "`Idempotency-Key` must be 1 to {MAX_KEY} characters"
        )));
    }
    Ok(Some(k.to_string()))
}

/// Answer a request through the keeper when it carries an `Idempotency-Key`, else at once:
/// `run` answers its body; `route` tells requests with the same body apart (the surface, and
/// what a URL carries); `refuse` renders an error in the surface's shape.
pub async fn guard(
    server: &Arc<super::Server>,
    client: &str,
    route: &str,
    headers: &HeaderMap,
    body: Bytes,
    run: impl FnOnce(Bytes) -> futures_util::future::BoxFuture<'static, Response>,
    refuse: impl FnOnce(ApiError) -> Response,
) -> Response {
    match key_of(headers) {
        Ok(None) => run(body).await,
        Ok(Some(key)) => {
            let now = server.router.ledger.now_ms();
            match server
                .idempotency
                .answer(client, key, route, body, now, run)
                .await
            {
                Ok(resp) => resp,
                Err(e) => refuse(e),
            }
        }
        Err(e) => refuse(e),
    }
}

/// What a request with a key is to do.
enum Turn {
    /// Read this recording (a duplicate of a running or kept answer).
    Replay(Arc<Recording>),
    /// Run it, into this recording.
    Run(Arc<Recording>),
}

impl Idempotency {
    pub fn new(ops: Arc<Ops>) -> Idempotency {
        Idempotency {
            ops,
            inner: Mutex::new(Inner {
                running: HashMap::new(),
                kept: LruCache::unbounded(),
                kept_bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answer `body` on `route` from `client` with `key`: replayed if seen, else `run` (in a
    /// task of its own, so it finishes even if this client goes away).
    pub async fn answer(
        self: &Arc<Self>,
        client: &str,
        key: String,
        route: &str,
        body: Bytes,
        now_ms: i64,
        run: impl FnOnce(Bytes) -> futures_util::future::BoxFuture<'static, Response>,
    ) -> Result<Response, ApiError> {
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(&body);
        let fingerprint = h.finalize().to_vec();
        let id = (client.to_string(), key);
        let turn = match self.turn(&id, &fingerprint, now_ms)? {
            Some(t) => t,
            None => {
                // Not in memory: perhaps in the store (kept before a restart, or evicted).
                let ops = Arc::clone(&self.ops);
                let (c, k) = id.clone();
                let since = now_ms - KEEP_MS;
                let stored = crate::offload::run(move || ops.idempotent(&c, &k, since))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten();
                if let Some(kept) = stored {
                    self.remember(id.clone(), Arc::new(kept));
                }
                // Decided again, and claimed under the same lock: another request may have
                // claimed the key meanwhile.
                self.turn_or_claim(&id, &fingerprint, now_ms)?
            }
        };
        let rec = match turn {
            Turn::Replay(rec) => return Ok(rec.response(true).await),
            Turn::Run(rec) => rec,
        };
        // Should this future be dropped (the client went away) or the run panic, the readers
        // are told and the key is free again.
        let unfinished = Unfinished {
            keeper: Arc::clone(self),
            id: id.clone(),
            rec: Arc::clone(&rec),
        };
        // Other replicas: one round trip, for requests with the header only.
        let cluster = self.ops.cluster().cloned();
        let shared = match &cluster {
            Some(c) => c.idem_claim(&id.0, &id.1, &fingerprint).await,
            None => Idem::Local,
        };
        match shared {
            Idem::Kept(kept) if kept.fingerprint != fingerprint => {
                self.refuse(&id, &rec).await;
                return Err(reused());
            }
            Idem::Running(fp) if fp != fingerprint => {
                self.refuse(&id, &rec).await;
                return Err(reused());
            }
            Idem::Kept(kept) => {
                self.adopt(id, kept, &rec).await;
                return Ok(rec.response(false).await);
            }
            _ => {}
        }
        let me = Arc::clone(self);
        let fut = run(body);
        let writer = Arc::clone(&rec);
        tokio::spawn(async move {
            let _unfinished = unfinished;
            let held = match (shared, &cluster) {
                (Idem::Run(held), _) => Some(held),
                (Idem::Running(_), Some(c)) => match wait(c, &id, &fingerprint).await {
                    Waited::Run(held) => Some(held),
                    Waited::Local => None,
                    Waited::Kept(kept) => {
                        me.adopt(id, kept, &writer).await;
                        return;
                    }
                    Waited::Refused(e) => {
                        let resp = axum::response::IntoResponse::into_response(e);
                        record(Box::pin(async move { resp }), &writer).await;
                        me.forget(&id, &writer);
                        return;
                    }
                },
                _ => None,
            };
            let keep = match (&held, &cluster) {
                (Some(held), Some(c)) => {
                    // The claim is renewed while the run goes on, so only a replica that
                    // died lets it lapse.
                    let renewing = async {
                        loop {
                            tokio::time::sleep(shared::RENEW).await;
                            if !c.idem_renew(held).await {
                                break;
                            }
                        }
                        std::future::pending::<()>().await;
                    };
                    tokio::select! {
                        keep = record(fut, &writer) => keep,
                        () = renewing => false,
                    }
                }
                _ => record(fut, &writer).await,
            };
            me.finish(id, fingerprint, &writer, keep, now_ms, cluster.zip(held))
                .await;
        });
        Ok(rec.response(false).await)
    }

    /// Another replica's answer: this request's too, replayed, and kept here as well.
    async fn adopt(&self, id: (String, String), kept: Kept, rec: &Recording) {
        rec.fill(&kept, true);
        let kept = Arc::new(kept);
        self.remember(id.clone(), Arc::clone(&kept));
        self.forget(&id, rec);
        let ops = Arc::clone(&self.ops);
        let saved = crate::offload::run(move || ops.keep_idempotent(&id.0, &id.1, &kept)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("an answer for an Idempotency-Key could not be stored");
        }
    }

    /// This request is refused (another replica holds the key for another body): readers of
    /// its recording (local duplicates with the same body) get the same refusal.
    async fn refuse(&self, id: &(String, String), rec: &Recording) {
        let resp = axum::response::IntoResponse::into_response(reused());
        record(Box::pin(async move { resp }), rec).await;
        self.forget(id, rec);
    }

    /// `rec` no longer runs for `id`.
    fn forget(&self, id: &(String, String), rec: &Recording) {
        let mut inner = self.lock();
        if inner
            .running
            .get(id)
            .is_some_and(|(_, r)| std::ptr::eq(Arc::as_ptr(r), rec))
        {
            inner.running.remove(id);
        }
    }

    /// From memory: a replay, a refusal, or nothing known.
    fn turn(
        &self,
        id: &(String, String),
        fingerprint: &[u8],
        now_ms: i64,
    ) -> Result<Option<Turn>, ApiError> {
        Self::decide(&mut self.lock(), id, fingerprint, now_ms)
    }

    /// From memory: a replay or a refusal; else the key is claimed for this request (one
    /// lock for both, so two requests with one key cannot both run).
    fn turn_or_claim(
        &self,
        id: &(String, String),
        fingerprint: &[u8],
        now_ms: i64,
    ) -> Result<Turn, ApiError> {
        let mut inner = self.lock();
        if let Some(t) = Self::decide(&mut inner, id, fingerprint, now_ms)? {
            return Ok(t);
        }
        let rec = Recording::new();
        inner
            .running
            .insert(id.clone(), (fingerprint.to_vec(), Arc::clone(&rec)));
        Ok(Turn::Run(rec))
    }

    fn decide(
        inner: &mut Inner,
        id: &(String, String),
        fingerprint: &[u8],
        now_ms: i64,
    ) -> Result<Option<Turn>, ApiError> {
        if let Some((fp, rec)) = inner.running.get(id) {
            if fp != fingerprint {
                return Err(reused());
            }
            return Ok(Some(Turn::Replay(Arc::clone(rec))));
        }
        let fresh = inner
            .kept
            .get(id)
            .map(|k| (k.at_ms > now_ms - KEEP_MS, Arc::clone(k)));
        match fresh {
            Some((true, kept)) if kept.fingerprint != fingerprint => Err(reused()),
            Some((true, kept)) => Ok(Some(Turn::Replay(Recording::of(&kept)))),
            Some((false, _)) => {
                if let Some(old) = inner.kept.pop(id) {
                    inner.kept_bytes -= old.body.len();
                }
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn remember(&self, id: (String, String), kept: Arc<Kept>) {
        let mut inner = self.lock();
        inner.kept_bytes += kept.body.len();
        if let Some(old) = inner.kept.put(id, kept) {
            inner.kept_bytes -= old.body.len();
        }
        while inner.kept_bytes > MEMORY_BYTES {
            match inner.kept.pop_lru() {
                Some((_, old)) => inner.kept_bytes -= old.body.len(),
                None => break,
            }
        }
    }

    /// The run ended: keep a successful answer, forget a failed one.
    async fn finish(
        &self,
        id: (String, String),
        fingerprint: Vec<u8>,
        rec: &Recording,
        keep: bool,
        now_ms: i64,
        held: Option<(Arc<Cluster>, Held)>,
    ) {
        let kept = keep.then(|| {
            let s = rec.lock();
            let (status, headers) = s.head.clone().unwrap_or_default();
            let headers = REPLAYED
                .iter()
                .filter_map(|n| Some((n.to_string(), headers.get(*n)?.to_str().ok()?.to_string())))
                .collect();
            let mut body = Vec::with_capacity(s.bytes);
            for c in &s.chunks {
                body.extend_from_slice(c);
            }
            Arc::new(Kept {
                fingerprint,
                status: status.as_u16(),
                headers,
                body,
                at_ms: now_ms,
            })
        });
        if let Some((cluster, held)) = &held {
            // Before the store: the replicas waiting for it poll Redis.
            cluster.idem_done(held, kept.as_deref(), KEEP_MS).await;
        }
        if let Some(kept) = &kept {
            self.remember(id.clone(), Arc::clone(kept));
            let ops = Arc::clone(&self.ops);
            let (c, k, kept) = (id.0.clone(), id.1.clone(), Arc::clone(kept));
            let saved = crate::offload::run(move || ops.keep_idempotent(&c, &k, &kept)).await;
            if !matches!(saved, Ok(Ok(()))) {
                tracing::warn!(
                    "an answer for an Idempotency-Key could not be stored; a retry after a restart runs again"
                );
            }
        }
        self.forget(&id, rec);
    }
}

fn reused() -> ApiError {
    ApiError::IdempotencyKeyReused(
        "this Idempotency-Key was used with another request; use a new key for a new request"
            .into(),
    )
}

/// What waiting for another replica's run came to.
enum Waited {
    /// Its answer.
    Kept(Kept),
    /// It ended without an answer to keep: this replica holds the key now.
    Run(Held),
    /// Redis went away: this replica runs it alone.
    Local,
    Refused(ApiError),
}

/// The longest a duplicate waits for another replica's run.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Wait for the replica running `id` to finish: its answer, or the key to run it here.
async fn wait(cluster: &Cluster, id: &(String, String), fingerprint: &[u8]) -> Waited {
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    loop {
        if tokio::time::Instant::now() >= deadline {
            return Waited::Refused(ApiError::UpstreamFailed(format!(
                "another replica has been answering this Idempotency-Key for over {} s; try again later",
                MAX_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(shared::POLL).await;
        match cluster.idem_claim(&id.0, &id.1, fingerprint).await {
            Idem::Running(fp) if fp == fingerprint => continue,
            Idem::Running(_) => return Waited::Refused(reused()),
            Idem::Kept(k) if k.fingerprint != fingerprint => return Waited::Refused(reused()),
            Idem::Kept(k) => return Waited::Kept(k),
            Idem::Run(held) => return Waited::Run(held),
            Idem::Local => {
                tracing::warn!(
                    "Redis went away while another replica ran this Idempotency-Key: running it here"
                );
                return Waited::Local;
            }
        }
    }
}

/// A run in its task: if it ends without finishing its recording (a panic), its readers get
/// the end of what there was (a 500 if nothing), and the key is free for a retry.
struct Unfinished {
    keeper: Arc<Idempotency>,
    id: (String, String),
    rec: Arc<Recording>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.rec.lock().done {
            return;
        }
        self.rec.update(|s| {
            if s.head.is_none() {
                s.head = Some((StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new()));
            }
            s.done = true;
        });
        let mut inner = self.keeper.lock();
        if inner
            .running
            .get(&self.id)
            .is_some_and(|(_, r)| Arc::ptr_eq(r, &self.rec))
        {
            inner.running.remove(&self.id);
        }
    }
}

/// Run `fut` and write its response into `rec`; whether the answer is one to keep.
async fn record(fut: futures_util::future::BoxFuture<'static, Response>, rec: &Recording) -> bool {
    let resp = fut.await;
    let (parts, body) = resp.into_parts();
    let broke = parts.extensions.get::<Broke>().cloned();
    let success = parts.status.is_success();
    rec.update(|s| s.head = Some((parts.status, parts.headers)));
    let mut stream = body.into_data_stream();
    let mut too_big = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => rec.update(|s| {
                s.bytes += b.len();
                too_big |= s.bytes > MAX_KEPT;
                s.chunks.push(b);
            }),
            Err(_) => {
                too_big = true;
                break;
            }
        }
    }
    rec.update(|s| s.done = true);
    let broke = broke.is_some_and(|b| b.0.load(std::sync::atomic::Ordering::Relaxed));
    success && !broke && !too_big
}
