//! State several replicas share through Redis or Valkey (SPEC 5.1, `[cluster] redis_url`).
//!
//! **The shared ledger.** Every reservation the local ledger grants (cooldowns, pacing and the
//! caps as this replica sees them) is then reserved in Redis by one server-side script
//! (`reserve.lua`): one round trip checks every counter the request counts in (each cap's
//! window of the model and its provider account, or a client key's own limits) and the shared
//! cooldowns, and counts it in all of them or in none. So N replicas together never send a
//! key more than its caps allow. Settling and releasing go to Redis from a background task,
//! off the request path. A request in flight stays counted with its estimate until settled:
//! a replica killed with -9 leaves the others at most what it had in flight short.
//!
//! Windows: a minute is counted in 1 s buckets and a rolling day in 10 min buckets (a bucket
//! counts until its last millisecond has left the span, as in the local ledger: never shorter
//! than the provider counts); calendar days, months and credits are one counter each. The
//! script answers what each counter held, and the day counts are mirrored into the local
//! ledger, so pacing and the dashboards see the whole cluster's use of the pools it touches.
//!
//! **When Redis cannot be reached**, each replica goes on alone with a share: for each
//! counter, 1/N of what it had left when last seen (N = replicas seen in the last
//! [`REPLICA_TTL_MS`]); a minute window 1/N of its cap, counted by the local ledger. What it
//! used meanwhile is added to Redis when Redis answers again, and the shared ledger is used
//! again from then on. `/readyz`, `freeway status` and the logs say which mode is on.
//!
//! Also shared: cooldowns (set by any replica, honoured by the script), sticky sessions, and
//! the replicas' heartbeats; in-flight Idempotency-Keys and the answer cache ([`shared`]).

pub mod shared;

use redis::aio::ConnectionManager;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::ledger::{
    Ask, CLIENT_SCOPE, Clock, Denied, Ledger, Reservation, Scope, SharedClaim, Span, cap_label,
    day_span, month_span,
};

/// Reserve `ask` in `ledger`, then in the shared ledger of `cluster` if there is one (one
/// round trip); refused there, the local claim goes back.
pub async fn take(
    ledger: &Arc<dyn Ledger>,
    cluster: Option<&Arc<Cluster>>,
    ask: &Ask,
) -> Result<Reservation, Denied> {
    let r = Reservation::take(ledger, ask)?;
    match cluster {
        Some(c) => share(r, c, ask).await,
        None => Ok(r),
    }
}

/// Count a local reservation in the shared ledger too; refused there, it is given back as
/// never sent.
pub async fn share(
    mut r: Reservation,
    cluster: &Arc<Cluster>,
    ask: &Ask,
) -> Result<Reservation, Denied> {
    match cluster.reserve(ask).await {
        Ok(claim) => {
            r.also(Box::new(Held {
                cluster: Arc::clone(cluster),
                claim,
            }));
            Ok(r)
        }
        Err(denied) => {
            r.unsent();
            Err(denied)
        }
    }
}

/// A claim in the shared ledger, settled with its local reservation.
struct Held {
    cluster: Arc<Cluster>,
    claim: Claim,
}

impl SharedClaim for Held {
    fn settle(&self, tokens: Option<u64>) {
        self.cluster.settle(&self.claim, tokens);
    }
    fn release(&self, sent: bool) {
        self.cluster.release(&self.claim, sent);
    }
}

/// A replica counts as alive this long after its last heartbeat.
pub const REPLICA_TTL_MS: i64 = 5_000;
/// How often a replica beats (and, when alone, tries Redis again).
const BEAT: Duration = Duration::from_secs(1);
/// How long a command may take before Redis counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Settlements and cooldowns kept while Redis is away at most (the oldest go first).
const MAX_PENDING: usize = 100_000;
/// A client key's request in flight ended on this replica: never below zero (Redis may have
/// restarted, or another replica removed this one's field while it was away).
const LEAVE: &str = "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], -1) \
                     if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end return 1";
/// A minute's buckets.
const MINUTE: Window = Window {
    span_ms: 60_000,
    width_ms: 1_000,
};
/// A rolling day's buckets.
const ROLLING_DAY: Window = Window {
    span_ms: 86_400_000,
    width_ms: 600_000,
};

#[derive(Clone, Copy, Debug)]
struct Window {
    span_ms: i64,
    width_ms: i64,
}

impl Window {
    fn bucket(&self, now: i64) -> i64 {
        now - now.rem_euclid(self.width_ms)
    }
    /// The oldest bucket start that still counts at `now`.
    fn cutoff(&self, now: i64) -> i64 {
        now - self.span_ms - self.width_ms + 2
    }
    fn frees_at(&self, oldest: i64) -> i64 {
        oldest + self.width_ms - 1 + self.span_ms
    }
}

/// Which caps a counter holds.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Minute,
    Day,
    Month,
    Credit,
}

impl Kind {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kind::Minute => ("rpm", "tpm"),
            Kind::Day => ("rpd", "tpd"),
            Kind::Month => ("requests per month", "tokens per month"),
            Kind::Credit => ("credit", "credit"),
        }
    }
}

/// One counter a request counts in.
#[derive(Debug)]
struct Counter {
    key: String,
    kind: Kind,
    account: bool,
    scope: Scope,
    /// `Some`: a rolling window in buckets; `None`: one fixed counter.
    rolling: Option<(Window, i64)>,
    /// When a fixed counter's window ends (`None`: never).
    ends_ms: Option<i64>,
    rcap: Option<u64>,
    tcap: Option<u64>,
    ttl_ms: i64,
}

impl Counter {
    fn fields(&self) -> (String, String) {
        match self.rolling {
            Some((_, bucket)) => (format!("r:{bucket}"), format!("t:{bucket}")),
            None => ("r".into(), "t".into()),
        }
    }
}

/// Where one reservation was counted: (hash key, request field, token field) per counter.
#[derive(Debug, Clone)]
pub struct Claim {
    marks: Vec<(String, String, String, i64)>,
    tokens: u64,
    /// Counted in Redis (else in this replica's share while Redis was away).
    shared: bool,
}

/// A client key's place among its requests in flight on every replica; given back when
/// dropped.
pub struct Seat {
    cluster: Arc<Cluster>,
    key: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.cluster.send(Op::Leave {
            key: std::mem::take(&mut self.key),
            field: self.cluster.replica.clone(),
        });
    }
}

/// Work for Redis that need not hold up a request.
#[derive(Debug, Clone)]
enum Op {
    Adjust {
        marks: Vec<(String, String, String, i64)>,
        dreq: i64,
        dtok: i64,
    },
    Cool {
        key: String,
        until_ms: i64,
        reason: String,
    },
    Clear(String),
    /// A request in flight of a client key ended on this replica.
    Leave {
        key: String,
        field: String,
    },
    Sticky {
        key: String,
        model: String,
        ttl_ms: i64,
    },
    /// A value only worth having while Redis answers (an answer cache entry): never kept
    /// for later.
    Set {
        key: String,
        value: Vec<u8>,
        ttl_ms: i64,
    },
}

/// Whether the ledger is shared right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Shared,
    /// Redis could not be reached since then: serving from a local share.
    Alone {
        since_ms: i64,
        why: String,
    },
}

/// What `/readyz` and `freeway status` show.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `"shared"` or `"local share"`.
    pub ledger: &'static str,
    /// Replicas seen in the last few seconds (this one included).
    pub replicas: u64,
    /// Why the ledger is local, and since when (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Settlements and cooldowns waiting for Redis, and those dropped because too many waited.
    pub pending: usize,
    pub dropped: u64,
    /// When the last heartbeat got an answer (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beat_ms: Option<i64>,
}

impl Health {
    /// One line for logs and the CLI.
    pub fn line(&self) -> String {
        match &self.why {
            None => format!("shared ledger on Redis, {} replica(s) seen", self.replicas),
            Some(why) => format!(
                "local share (1/{} of what each pool had left): Redis unreachable ({why})",
                self.replicas
            ),
        }
    }
}

/// A counter as last seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    requests: u64,
    tokens: u64,
    /// A rolling window (buckets), else one fixed counter.
    window: Option<Window>,
    kind: Kind,
    ttl_ms: i64,
    /// When it was read (ms).
    at_ms: i64,
    /// Forgotten after this (ms): its window is over.
    until_ms: i64,
}

/// What this replica used of one counter while Redis was away.
#[derive(Debug, Default)]
struct Alone {
    /// Request field → (token field, requests, tokens).
    fields: HashMap<String, (String, i64, i64)>,
    ttl_ms: i64,
}

impl Alone {
    /// Requests and tokens counted in buckets from `cutoff` on (`None`: all of them).
    fn used(&self, cutoff: Option<i64>) -> (u64, u64) {
        let (mut r, mut t) = (0i64, 0i64);
        for (rf, (_, fr, ft)) in &self.fields {
            let bucket = rf.strip_prefix("r:").and_then(|b| b.parse::<i64>().ok());
            if let (Some(cut), Some(b)) = (cutoff, bucket) {
                if b < cut {
                    continue;
                }
            }
            r += fr;
            t += ft;
        }
        (r.max(0) as u64, t.max(0) as u64)
    }
}

/// `left` shared by `n` replicas, this one `rank`-th: the remainder goes to the first ones,
/// so a cap smaller than N still serves somewhere.
fn portion(left: u64, n: u64, rank: u64) -> u64 {
    let n = n.max(1);
    left / n + u64::from(rank < left % n)
}

struct State {
    mode: Mode,
    /// When the last heartbeat (and its refresh of what was seen) got an answer.
    beat_ms: Option<i64>,
    /// N: replicas seen at the last heartbeat.
    replicas: u64,
    /// This replica's place among the replicas beating (by id), for a share's remainder.
    rank: u64,
    /// The id Redis's data was started under: another one means it restarted empty.
    epoch: Option<String>,
    /// What counters held when last seen (refreshed every heartbeat).
    seen: HashMap<String, Seen>,
    /// Use counted in this replica's share while Redis was away, by counter key.
    alone: HashMap<String, Alone>,
    /// Work that failed while Redis was away, sent when it answers again.
    pending: VecDeque<Op>,
    dropped: u64,
}

/// The connection to Redis and what this replica knows of the others.
pub struct Cluster {
    conn: ConnectionManager,
    prefix: String,
    replica: String,
    clock: Arc<dyn Clock>,
    ledger: Arc<dyn Ledger>,
    state: Mutex<State>,
    ops: mpsc::UnboundedSender<Op>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Op>>>,
    reserve: redis::Script,
    sticky_ttl_ms: i64,
}

impl Cluster {
    /// Connect lazily to `url` (the first command connects; a Redis that is down at start
    /// means a local share until it answers). Call [`Cluster::start`] to run the heartbeat.
    pub fn new(
        url: &str,
        prefix: &str,
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        sticky_ttl: Duration,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("cluster.redis_url: {}", redact_url(&e.to_string())))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("cluster.redis_url: {}", redact_url(&e.to_string())))?;
        let (ops, rx) = mpsc::unbounded_channel();
        let replica = format!("{:016x}", rand::random::<u64>());
        Ok(Arc::new(Cluster {
            conn,
            prefix: prefix.to_string(),
            replica,
            clock,
            ledger,
            state: Mutex::new(State {
                mode: Mode::Shared,
                beat_ms: None,
                replicas: 1,
                rank: 0,
                epoch: None,
                seen: HashMap::new(),
                alone: HashMap::new(),
                pending: VecDeque::new(),
                dropped: 0,
            }),
            ops,
            rx: Mutex::new(Some(rx)),
            reserve: redis::Script::new(concat!(
                include_str!("held.lua"),
                include_str!("reserve.lua")
            )),
            sticky_ttl_ms: sticky_ttl.as_millis() as i64,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mode, the replicas seen and what waits for Redis.
    pub fn health(&self) -> Health {
        let st = self.lock();
        let (ledger, why, since_ms) = match &st.mode {
            Mode::Shared => ("shared", None, None),
            Mode::Alone { since_ms, why } => ("local share", Some(why.clone()), Some(*since_ms)),
        };
        Health {
            ledger,
            replicas: st.replicas,
            why,
            since_ms,
            pending: st.pending.len(),
            dropped: st.dropped,
            beat_ms: st.beat_ms,
        }
    }

    fn scope_id(&self, scope: &Scope) -> String {
        format!(
            "{}/{}/{}",
            scope.provider,
            scope.model.as_deref().unwrap_or(""),
            scope.key
        )
    }

    fn cool_key(&self, scope: &Scope) -> String {
        format!("{}:cool:{}", self.prefix, self.scope_id(scope))
    }

    /// The counters an ask counts in, at `now`.
    fn counters(&self, ask: &Ask, now: i64) -> Vec<Counter> {
        let mut scopes = vec![(ask.model_scope(), ask.limits, false)];
        if !ask.account.is_empty() {
            scopes.push((Scope::key(&ask.provider, &ask.pool), ask.account, true));
        }
        let mut out = Vec::new();
        for (scope, l, account) in scopes {
            let id = format!("{}:c:{}", self.prefix, self.scope_id(&scope));
            let counter = |key: String, kind, rolling, ends_ms, rcap, tcap, ttl_ms| Counter {
                key,
                kind,
                account,
                scope: scope.clone(),
                rolling,
                ends_ms,
                rcap,
                tcap,
                ttl_ms,
            };
            if l.rpm.is_some() || l.tpm.is_some() {
                let w = MINUTE;
                let ttl = w.span_ms + 2 * w.width_ms;
                out.push(counter(
                    format!("{id}:m"),
                    Kind::Minute,
                    Some((w, w.bucket(now))),
                    None,
                    l.rpm,
                    l.tpm,
                    ttl,
                ));
            }
            if l.rpd.is_some() || l.tpd.is_some() {
                match day_span(ask.reset) {
                    Span::Calendar(_) => {
                        let span = day_span(ask.reset);
                        let start = span.bucket_start(now);
                        let end = span.expiry(start);
                        out.push(counter(
                            format!("{id}:d:{start}"),
                            Kind::Day,
                            None,
                            Some(end),
                            l.rpd,
                            l.tpd,
                            end - now + 3_600_000,
                        ));
                    }
                    _ => {
                        let w = ROLLING_DAY;
                        out.push(counter(
                            format!("{id}:rd"),
                            Kind::Day,
                            Some((w, w.bucket(now))),
                            None,
                            l.rpd,
                            l.tpd,
                            w.span_ms + 2 * w.width_ms,
                        ));
                    }
                }
            }
            if l.rpmo.is_some() || l.tpmo.is_some() {
                let span = month_span(ask.reset);
                let start = span.bucket_start(now);
                let end = span.expiry(start);
                out.push(counter(
                    format!("{id}:mo:{start}"),
                    Kind::Month,
                    None,
                    Some(end),
                    l.rpmo,
                    l.tpmo,
                    end - now + 86_400_000,
                ));
            }
            if l.credit.is_some() {
                out.push(counter(
                    format!("{id}:all"),
                    Kind::Credit,
                    None,
                    None,
                    None,
                    l.credit,
                    0,
                ));
            }
        }
        out
    }

    /// The scopes whose shared cooldowns an ask honours (a client key's own limits have none).
    fn cooling_scopes(ask: &Ask) -> Vec<Scope> {
        if ask.provider == CLIENT_SCOPE {
            return Vec::new();
        }
        let mut scopes = vec![
            ask.model_scope(),
            Scope::key(&ask.provider, &ask.pool),
            Scope::key(&ask.provider, &ask.key),
            Scope::model(&ask.provider, &ask.model, &ask.key),
        ];
        scopes.dedup();
        scopes
    }

    /// Reserve `ask` in the shared ledger (after the local ledger granted it): one round trip.
    /// Redis unreachable: from this replica's share.
    pub async fn reserve(&self, ask: &Ask) -> Result<Claim, Denied> {
        let now = self.clock.now_ms();
        let counters = self.counters(ask, now);
        let cooling = Self::cooling_scopes(ask);
        if counters.is_empty() && cooling.is_empty() {
            return Ok(Claim {
                marks: Vec::new(),
                tokens: ask.tokens,
                shared: true,
            });
        }
        if matches!(self.lock().mode, Mode::Alone { .. }) {
            return self.reserve_alone(ask, &counters, now);
        }
        let mut inv = self.reserve.prepare_invoke();
        for s in &cooling {
            inv.key(self.cool_key(s));
        }
        for c in &counters {
            inv.key(&c.key);
        }
        inv.arg(now).arg(cooling.len()).arg(ask.tokens);
        for c in &counters {
            let (kind, bucket, cutoff) = match c.rolling {
                Some((w, bucket)) => ("r", bucket, w.cutoff(now)),
                None => ("f", 0, 0),
            };
            let cap = |v: Option<u64>| v.map_or(-1, |v| v as i64);
            inv.arg(kind)
                .arg(bucket)
                .arg(cutoff)
                .arg(cap(c.rcap))
                .arg(cap(c.tcap))
                .arg(c.ttl_ms.max(0));
        }
        let mut conn = self.conn.clone();
        let answer: Result<Vec<redis::Value>, _> = inv.invoke_async(&mut conn).await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) if unreachable(&e) => {
                self.alone(now, &e);
                return self.reserve_alone(ask, &counters, now);
            }
            Err(e) => {
                // Not a lost connection (a script error, a full or read-only server): this
                // replica goes on alone, says why, and the heartbeat tries again (adding
                // what it used meanwhile).
                tracing::error!(error = %redact_url(&e.to_string()), "Redis refused a reservation");
                self.alone(now, &e);
                return self.reserve_alone(ask, &counters, now);
            }
        };
        let int = |i: usize| -> i64 {
            match answer.get(i) {
                Some(redis::Value::Int(v)) => *v,
                _ => 0,
            }
        };
        match int(0) {
            1 => {
                let mut st = self.lock();
                let mut marks = Vec::with_capacity(counters.len());
                for (j, c) in counters.iter().enumerate() {
                    let r = int(1 + 2 * j).max(0) as u64 + 1;
                    let t = int(2 + 2 * j).max(0) as u64 + ask.tokens;
                    let until_ms = match (c.kind, c.ends_ms) {
                        (Kind::Minute, _) => now + MINUTE.span_ms + 2 * MINUTE.width_ms,
                        (_, Some(end)) => end,
                        _ => now + c.ttl_ms.max(86_400_000),
                    };
                    let seen = Seen {
                        requests: r,
                        tokens: t,
                        window: c.rolling.map(|(w, _)| w),
                        kind: c.kind,
                        ttl_ms: c.ttl_ms,
                        at_ms: now,
                        until_ms,
                    };
                    st.seen.insert(c.key.clone(), seen);
                    if c.kind == Kind::Day {
                        self.ledger.mirror(&c.scope, ask.reset, r, t);
                    }
                    let (rf, tf) = c.fields();
                    marks.push((c.key.clone(), rf, tf, c.ttl_ms));
                }
                Ok(Claim {
                    marks,
                    tokens: ask.tokens,
                    shared: true,
                })
            }
            2 => {
                let i = int(1).max(1) as usize - 1;
                let text = match answer.get(2) {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    _ => String::new(),
                };
                let (until, reason) = text.split_once(' ').unwrap_or((&text, ""));
                let until_ms = until.parse().unwrap_or(now + 1_000);
                let reason = format!("{reason} (another replica)");
                if let Some(scope) = cooling.get(i) {
                    self.ledger.cool(scope.clone(), until_ms, &reason);
                }
                Err(Denied::Cooling { until_ms, reason })
            }
            _ => {
                let j = int(1).max(1) as usize - 1;
                let Some(c) = counters.get(j) else {
                    return Err(Denied::Capped {
                        cap: "rpm",
                        frees_at_ms: Some(now + 1_000),
                    });
                };
                let (r, t, oldest) = (int(2).max(0) as u64, int(3).max(0) as u64, int(4));
                if c.kind == Kind::Day {
                    self.ledger.mirror(&c.scope, ask.reset, r, t);
                }
                Err(denied(c, r, oldest, now))
            }
        }
    }

    /// Redis failed: serve alone from now on, until a heartbeat gets an answer.
    fn alone(&self, now: i64, e: &redis::RedisError) {
        let mut st = self.lock();
        if st.mode == Mode::Shared {
            let why = redact_url(&e.to_string());
            tracing::warn!(
                replicas = st.replicas,
                error = %why,
                "Redis cannot be reached: serving from a local share of each pool (1/{} of what it had left)",
                st.replicas
            );
            st.mode = Mode::Alone { since_ms: now, why };
        }
    }

    /// A reservation from this replica's share while Redis is away.
    fn reserve_alone(&self, ask: &Ask, counters: &[Counter], now: i64) -> Result<Claim, Denied> {
        let mut st = self.lock();
        let (n, rank) = (st.replicas.max(1), st.rank);
        for c in counters {
            // A minute's buckets that left the window need no counting, nor adding back.
            if let (Some((w, _)), Some(a)) = (c.rolling, st.alone.get_mut(&c.key)) {
                if c.kind == Kind::Minute {
                    let cut = w.cutoff(now);
                    a.fields.retain(|rf, _| {
                        rf.strip_prefix("r:")
                            .and_then(|b| b.parse::<i64>().ok())
                            .is_none_or(|b| b >= cut)
                    });
                }
            }
            let seen = st.seen.get(&c.key).copied();
            let mine = st.alone.get(&c.key).map(|a| {
                let cutoff = c.rolling.map(|(w, _)| w.cutoff(now));
                a.used(cutoff)
            });
            for (cap, want, tokens) in [(c.rcap, 1u64, false), (c.tcap, ask.tokens, true)] {
                let Some(cap) = cap else { continue };
                let pick = |(r, t): (u64, u64)| if tokens { t } else { r };
                let mine = mine.map(pick).unwrap_or(0);
                let (used, allowed) = match seen {
                    // A minute seen less than a minute ago: what was left then, shared, against
                    // what this replica used alone since.
                    Some(s) if c.kind == Kind::Minute && now - s.at_ms < MINUTE.span_ms => (
                        mine,
                        portion(cap.saturating_sub(pick((s.requests, s.tokens))), n, rank),
                    ),
                    // A minute since: 1/N of the cap, as this replica's own ledger counts it
                    // (which already holds this request).
                    _ if c.kind == Kind::Minute => {
                        let u = self.ledger.usage(&c.scope, ask.reset);
                        let own = if tokens {
                            u.minute_tokens.saturating_sub(want)
                        } else {
                            u.minute_requests.saturating_sub(1)
                        };
                        (own, portion(cap, n, rank))
                    }
                    Some(s) => (
                        mine,
                        portion(cap.saturating_sub(pick((s.requests, s.tokens))), n, rank),
                    ),
                    None => (mine, portion(cap, n, rank)),
                };
                if used + want > allowed {
                    let name = if tokens {
                        c.kind.names().1
                    } else {
                        c.kind.names().0
                    };
                    let frees_at_ms = match c.kind {
                        Kind::Minute => Some(now + 1_000),
                        Kind::Credit => None,
                        _ => c.ends_ms.or(Some(now + 60_000)),
                    };
                    return Err(Denied::Capped {
                        cap: cap_label(c.account, name),
                        frees_at_ms,
                    });
                }
            }
        }
        let mut marks = Vec::with_capacity(counters.len());
        for c in counters {
            let (rf, tf) = c.fields();
            marks.push((c.key.clone(), rf, tf, c.ttl_ms));
        }
        let shared = st.mode == Mode::Shared;
        if shared {
            // Redis came back while this was decided: count it there at once.
            drop(st);
            self.send(Op::Adjust {
                marks: marks.clone(),
                dreq: 1,
                dtok: ask.tokens as i64,
            });
        } else {
            for (key, rf, tf, ttl) in &marks {
                let a = st.alone.entry(key.clone()).or_default();
                a.ttl_ms = *ttl;
                let e = a.fields.entry(rf.clone()).or_insert((tf.clone(), 0, 0));
                e.1 += 1;
                e.2 += ask.tokens as i64;
            }
        }
        Ok(Claim {
            marks,
            tokens: ask.tokens,
            shared,
        })
    }

    fn adjust(&self, claim: &Claim, dreq: i64, dtok: i64) {
        if claim.marks.is_empty() || (dreq == 0 && dtok == 0) {
            return;
        }
        if !claim.shared {
            let mut st = self.lock();
            let mut all = true;
            for (key, rf, _, _) in &claim.marks {
                match st.alone.get_mut(key).and_then(|a| a.fields.get_mut(rf)) {
                    Some(e) => {
                        e.1 += dreq;
                        e.2 += dtok;
                    }
                    None => all = false,
                }
            }
            if all {
                return;
            }
        }
        self.send(Op::Adjust {
            marks: claim.marks.clone(),
            dreq,
            dtok,
        });
    }

    /// The request was answered and used `tokens` in all (`None`: the estimate stands).
    pub fn settle(&self, claim: &Claim, tokens: Option<u64>) {
        if let Some(used) = tokens {
            self.adjust(claim, 0, used as i64 - claim.tokens as i64);
        }
    }

    /// The request failed: its tokens go back (and the request too when it was never sent).
    pub fn release(&self, claim: &Claim, sent: bool) {
        self.adjust(claim, if sent { 0 } else { -1 }, -(claim.tokens as i64));
    }

    /// Cool `scope` down for every replica.
    pub fn cool(&self, scope: &Scope, until_ms: i64, reason: &str) {
        self.send(Op::Cool {
            key: self.cool_key(scope),
            until_ms,
            reason: reason.to_string(),
        });
    }

    /// End `scope`'s cooldown for every replica.
    pub fn clear(&self, scope: &Scope) {
        self.send(Op::Clear(self.cool_key(scope)));
    }

    /// Take a place among `client`'s requests in flight on every replica, at most `max`
    /// (`Ok(None)`: Redis is away, this replica's own count is all there is).
    pub async fn enter(self: &Arc<Self>, client: &str, max: u32) -> Result<Option<Seat>, ()> {
        if self.lock().mode != Mode::Shared {
            return Ok(None);
        }
        let key = format!("{}:inflight:{client}", self.prefix);
        let now = self.clock.now_ms();
        let mut conn = self.conn.clone();
        let entered = redis::Script::new(include_str!("enter.lua"))
            .key(&key)
            .key(format!("{}:replicas", self.prefix))
            .arg(&self.replica)
            .arg(max)
            .arg(now - REPLICA_TTL_MS)
            .invoke_async::<i64>(&mut conn)
            .await;
        match entered {
            Ok(1) => Ok(Some(Seat {
                cluster: Arc::clone(self),
                key,
            })),
            Ok(_) => Err(()),
            Err(e) => {
                if unreachable(&e) {
                    self.alone(now, &e);
                }
                Ok(None)
            }
        }
    }

    fn sticky_key(&self, id: &str) -> String {
        format!("{}:sticky:{id}", self.prefix)
    }

    /// Remember for every replica that `model` serves the conversation `id`.
    pub fn stick(&self, id: &str, model: &str) {
        self.send(Op::Sticky {
            key: self.sticky_key(id),
            model: model.to_string(),
            ttl_ms: self.sticky_ttl_ms,
        });
    }

    /// The model another replica keeps the conversation `id` on (`None` too when Redis is
    /// away: the conversation goes on where this replica routes it).
    pub async fn sticky(&self, id: &str) -> Option<String> {
        if self.lock().mode != Mode::Shared {
            return None;
        }
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(self.sticky_key(id))
            .query_async::<Option<String>>(&mut conn)
            .await
            .ok()
            .flatten()
    }

    fn send(&self, op: Op) {
        if self.ops.send(op).is_err() {
            // The background task is gone (shutting down): nothing more to share.
        }
    }

    /// Run the heartbeat and the background writer until `stop`.
    pub fn start(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let me = Arc::clone(self);
        tasks.spawn(crate::offload::on_loop(async move {
            let mut beat = tokio::time::interval(BEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = beat.tick() => me.beat().await,
                    op = rx.recv() => {
                        let Some(op) = op else { break };
                        let mut batch = vec![op];
                        while batch.len() < 512 {
                            match rx.try_recv() {
                                Ok(op) => batch.push(op),
                                Err(_) => break,
                            }
                        }
                        me.write(batch).await;
                    }
                    _ = stop.cancelled() => {
                        let mut batch = Vec::new();
                        while let Ok(op) = rx.try_recv() {
                            batch.push(op);
                        }
                        me.write(batch).await;
                        me.leave().await;
                        break;
                    }
                }
            }
        }));
    }

    /// Send queued work; kept for later when Redis is away.
    async fn write(&self, batch: Vec<Op>) {
        if batch.is_empty() {
            return;
        }
        if self.lock().mode != Mode::Shared {
            self.keep(batch);
            return;
        }
        let mut pipe = self.pipeline(&batch, self.clock.now_ms());
        // All or nothing: a batch kept for later after a failure is never half applied.
        pipe.atomic();
        let mut conn = self.conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            if unreachable(&e) {
                self.alone(self.clock.now_ms(), &e);
                self.keep(batch);
            } else {
                tracing::error!(error = %redact_url(&e.to_string()), "Redis refused shared ledger work");
            }
        }
    }

    fn keep(&self, batch: Vec<Op>) {
        let mut st = self.lock();
        for op in batch {
            if matches!(op, Op::Set { .. }) {
                continue;
            }
            if st.pending.len() >= MAX_PENDING {
                st.pending.pop_front();
                st.dropped += 1;
            }
            st.pending.push_back(op);
        }
    }

    fn pipeline(&self, batch: &[Op], now: i64) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        self.add_ops(&mut pipe, batch, now);
        pipe
    }

    fn add_ops(&self, pipe: &mut redis::Pipeline, batch: &[Op], now: i64) {
        for op in batch {
            match op {
                Op::Adjust { marks, dreq, dtok } => {
                    for (key, rf, tf, _) in marks {
                        if *dreq != 0 {
                            pipe.hincr(key, rf, *dreq).ignore();
                        }
                        if *dtok != 0 {
                            pipe.hincr(key, tf, *dtok).ignore();
                        }
                    }
                }
                Op::Cool {
                    key,
                    until_ms,
                    reason,
                } => {
                    if *until_ms > now {
                        pipe.cmd("EVAL")
                            .arg(include_str!("cool.lua"))
                            .arg(1)
                            .arg(key)
                            .arg(until_ms)
                            .arg(reason)
                            .arg(until_ms - now)
                            .ignore();
                    }
                }
                Op::Clear(key) => {
                    pipe.del(key).ignore();
                }
                Op::Leave { key, field } => {
                    pipe.cmd("EVAL")
                        .arg(LEAVE)
                        .arg(1)
                        .arg(key)
                        .arg(field)
                        .ignore();
                }
                Op::Sticky { key, model, ttl_ms } => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(model)
                        .arg("PX")
                        .arg((*ttl_ms).max(1))
                        .ignore();
                }
                Op::Set { key, value, ttl_ms } => {
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("PX")
                        .arg((*ttl_ms).max(1))
                        .ignore();
                }
            }
        }
    }

    /// One heartbeat: count the replicas and find this one's rank; notice a Redis that
    /// restarted empty; when alone, try to share again.
    async fn beat(&self) {
        let now = self.clock.now_ms();
        let key = format!("{}:replicas", self.prefix);
        let epoch_key = format!("{}:epoch", self.prefix);
        let mut conn = self.conn.clone();
        let counted: Result<(Vec<String>, String), _> = redis::pipe()
            .zadd(&key, &self.replica, now)
            .ignore()
            .zrembyscore(&key, "-inf", now - REPLICA_TTL_MS)
            .ignore()
            .zrange(&key, 0, -1)
            .cmd("SET")
            .arg(&epoch_key)
            // A new value for every life of Redis's data, whoever writes it first.
            .arg(format!("{:016x}", rand::random::<u64>()))
            .arg("NX")
            .ignore()
            .get(&epoch_key)
            .query_async(&mut conn)
            .await;
        let (mut replicas, epoch) = match counted {
            Ok(v) => v,
            Err(e) => {
                self.alone(now, &e);
                return;
            }
        };
        replicas.sort();
        let rank = replicas.iter().position(|r| *r == self.replica);
        let (back, restarted, known) = {
            let mut st = self.lock();
            st.replicas = (replicas.len() as u64).max(1);
            st.rank = rank.unwrap_or(replicas.len()) as u64;
            let restarted = st.epoch.as_ref().is_some_and(|e| *e != epoch);
            if restarted {
                tracing::warn!(
                    "Redis restarted without its data: raising the counters this replica knows back to what it last saw"
                );
            }
            st.epoch = Some(epoch);
            st.seen.retain(|_, v| v.until_ms > now);
            let known: Vec<(String, Option<Window>)> =
                st.seen.iter().map(|(k, v)| (k.clone(), v.window)).collect();
            (!matches!(st.mode, Mode::Shared), restarted, known)
        };
        if back || restarted {
            self.rejoin(now, restarted).await;
        } else if !known.is_empty() {
            self.refresh(known, now).await;
        }
        self.lock().beat_ms = Some(now);
    }

    /// Read again what the counters this replica knows hold, so a share taken when Redis
    /// goes away is of what was left at most a heartbeat before.
    async fn refresh(&self, keys: Vec<(String, Option<Window>)>, now: i64) {
        let mut pipe = redis::pipe();
        for (k, window) in &keys {
            pipe.cmd("EVAL")
                .arg(concat!(include_str!("held.lua"), include_str!("read.lua")))
                .arg(1)
                .arg(k)
                .arg(if window.is_some() { "r" } else { "f" })
                .arg(window.map_or(0, |w| w.cutoff(now)));
        }
        let mut conn = self.conn.clone();
        let Ok(values) = pipe.query_async::<Vec<(u64, u64)>>(&mut conn).await else {
            return;
        };
        let mut st = self.lock();
        for ((k, _), (r, t)) in keys.iter().zip(values) {
            if let Some(seen) = st.seen.get_mut(k) {
                seen.requests = r;
                seen.tokens = t;
                seen.at_ms = now;
            }
        }
    }

    /// Redis answers again (or restarted empty, `raise`): add what this replica used alone,
    /// send what waited, share again. After a restart, each counter it knows is first raised
    /// back to what it last saw (a minute's are left to pass).
    async fn rejoin(&self, now: i64, raise: bool) {
        let (alone, pending, seen) = {
            let mut st = self.lock();
            let seen: Vec<(String, Seen)> = if raise {
                st.seen
                    .iter()
                    .filter(|(_, v)| v.kind != Kind::Minute)
                    .map(|(k, v)| (k.clone(), *v))
                    .collect()
            } else {
                Vec::new()
            };
            (
                std::mem::take(&mut st.alone),
                std::mem::take(&mut st.pending),
                seen,
            )
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, v) in &seen {
            let kind = if v.window.is_some() { "r" } else { "f" };
            pipe.cmd("EVAL")
                .arg(concat!(include_str!("held.lua"), include_str!("raise.lua")))
                .arg(1)
                .arg(key)
                .arg(kind)
                .arg(ROLLING_DAY.bucket(now))
                .arg(v.requests)
                .arg(v.tokens)
                .arg(v.ttl_ms.max(0))
                .arg(ROLLING_DAY.cutoff(now))
                .ignore();
        }
        self.add_ops(&mut pipe, &pending.iter().cloned().collect::<Vec<_>>(), now);
        for (key, a) in &alone {
            for (rf, (tf, r, t)) in &a.fields {
                pipe.hincr(key, rf, *r).ignore();
                pipe.hincr(key, tf, *t).ignore();
            }
            if a.ttl_ms > 0 {
                pipe.pexpire(key, a.ttl_ms).ignore();
            }
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                // What was counted alone or queued while this ran goes out now, and the
                // mode changes under the same lock, so nothing is left behind.
                let (late_alone, late_pending) = {
                    let mut st = self.lock();
                    if let Mode::Alone { since_ms, .. } = st.mode {
                        tracing::info!(
                            alone_ms = now - since_ms,
                            "Redis answers again: the ledger is shared again"
                        );
                    }
                    st.mode = Mode::Shared;
                    (
                        std::mem::take(&mut st.alone),
                        std::mem::take(&mut st.pending),
                    )
                };
                for op in late_pending {
                    self.send(op);
                }
                for (key, a) in late_alone {
                    for (rf, (tf, r, t)) in a.fields {
                        self.send(Op::Adjust {
                            marks: vec![(key.clone(), rf, tf, a.ttl_ms)],
                            dreq: r,
                            dtok: t,
                        });
                    }
                }
            }
            Err(e) => {
                let mut st = self.lock();
                for (key, a) in alone {
                    let into = st.alone.entry(key).or_default();
                    into.ttl_ms = a.ttl_ms;
                    for (rf, (tf, r, t)) in a.fields {
                        let f = into.fields.entry(rf).or_insert((tf, 0, 0));
                        f.1 += r;
                        f.2 += t;
                    }
                }
                let mut pending = pending;
                pending.extend(st.pending.drain(..));
                st.pending = pending;
                drop(st);
                self.alone(now, &e);
            }
        }
    }

    /// Leave the heartbeat set (a clean shutdown: the others' shares grow at once).
    async fn leave(&self) {
        let mut conn = self.conn.clone();
        let _: Result<(), _> = redis::cmd("ZREM")
            .arg(format!("{}:replicas", self.prefix))
            .arg(&self.replica)
            .query_async(&mut conn)
            .await;
    }
}

/// What `freeway status` says of the cluster (it runs apart from the replicas): whether Redis
/// answers, and how many replicas beat in the last [`REPLICA_TTL_MS`].
pub async fn probe(url: &str, prefix: &str, now_ms: i64) -> String {
    let asked = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let key = format!("{prefix}:replicas");
        redis::cmd("ZCOUNT")
            .arg(&key)
            .arg(now_ms - REPLICA_TTL_MS)
            .arg("+inf")
            .query_async::<u64>(&mut conn)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(2), asked).await {
        Ok(Ok(n)) => format!(
            "shared ledger on Redis ({}), {n} replica(s) beating",
            redact_url(url)
        ),
        Ok(Err(e)) => format!(
            "Redis unreachable ({}): each replica serves from a local share (1/N of what each pool had left)",
            redact_url(&e.to_string())
        ),
        Err(_) => "Redis did not answer within 2 s: each replica serves from a local share (1/N of what each pool had left)".to_string(),
    }
}

/// The denial for counter `c`, full at `used` requests (`tokens` asked).
fn denied(c: &Counter, used_requests: u64, oldest: i64, now: i64) -> Denied {
    let (rname, tname) = c.kind.names();
    let requests_full = c.rcap.is_some_and(|cap| used_requests + 1 > cap);
    let name = if requests_full { rname } else { tname };
    let frees_at_ms = match (c.rolling, c.ends_ms) {
        (Some((w, _)), _) if oldest >= 0 => Some(w.frees_at(oldest).max(now + 1)),
        (Some((w, _)), _) => Some(now + w.width_ms),
        (None, end) => end,
    };
    Denied::Capped {
        cap: cap_label(c.account, name),
        frees_at_ms,
    }
}

/// Whether an error means Redis cannot be reached (rather than that it refused a command).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// A Redis URL or error text with any password taken out.
pub fn redact_url(text: &str) -> String {
    // redis://user:password@host → redis://user:***@host
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user = authority[..at].split(':').next().unwrap_or("");
                out.push_str(user);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact_url("cannot reach redis://app:s3cret@db:6379/0 now"),
            "cannot reach redis://app:***@db:6379/0 now"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn buckets_count_until_their_last_millisecond_leaves_the_span() {
        let w = MINUTE;
        let now = 1_000_000;
        let b = w.bucket(now - 60_000);
        // The bucket that started 60 s before this second still holds requests from its last
        // millisecond, which are inside the minute.
        assert!(b >= w.cutoff(now) || b + w.width_ms - 1 + w.span_ms <= now);
        assert!(w.bucket(now) >= w.cutoff(now));
        assert!(w.cutoff(now) + w.width_ms - 1 + w.span_ms > now);
        assert!(w.cutoff(now) - 1 + w.width_ms - 1 + w.span_ms <= now);
    }
}

#[cfg(test)]
mod share_tests {
    use super::*;

    #[test]
    fn a_share_gives_its_remainder_to_the_first_replicas() {
        // Two requests left, three replicas: the first two get one each, nobody gets zero
        // of a share that would round to it everywhere.
        let shares: Vec<u64> = (0..3).map(|rank| portion(2, 3, rank)).collect();
        assert_eq!(shares, vec![1, 1, 0]);
        assert_eq!((0..3).map(|rank| portion(30, 3, rank)).sum::<u64>(), 30);
        assert_eq!((0..4).map(|rank| portion(31, 4, rank)).sum::<u64>(), 31);
        assert_eq!(portion(5, 0, 0), 5);
    }

    #[test]
    fn use_alone_is_counted_within_a_window() {
        let mut a = Alone::default();
        a.fields.insert("r:1000".into(), ("t:1000".into(), 2, 20));
        a.fields.insert("r:5000".into(), ("t:5000".into(), 3, 30));
        assert_eq!(a.used(None), (5, 50));
        assert_eq!(a.used(Some(2000)), (3, 30));
        let mut fixed = Alone::default();
        fixed.fields.insert("r".into(), ("t".into(), 4, 40));
        assert_eq!(fixed.used(Some(2000)), (4, 40));
    }
}
