//! The store: the only module that writes SQL. One [`Store`] type over two engines, SQLite in
//! `data_dir` (the default) and PostgreSQL (`[store] url`, for several replicas), with the same
//! methods, so nothing above it knows which one runs (see `engine`).
//!
//! SQLite is one connection behind a `std::sync::Mutex`, in WAL mode so the CLI and a running
//! server share the file; PostgreSQL is a small pool of connections. Every call blocks: async
//! callers go through `offload::run`, and a call from the event loop is caught by its guard.
//! The request path never waits on the store: counters live in memory and reach the database
//! from background tasks.

use anyhow::Context;
use rusqlite::Connection;
use std::path::Path;
use std::sync::Mutex;

mod engine;
mod migrations;

use engine::{Db, Pool, Row};
pub use engine::{Unavailable, is_unavailable, redact};

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "freeway.db";

/// Shared handle to the database.
pub struct Store {
    engine: Engine,
}

/// Which database holds the state.
enum Engine {
    /// One connection: SQLite allows one writer anyway, and the lock orders them.
    Sqlite(Mutex<Connection>),
    Postgres(Box<Pool>),
}
/// A provider key row, still sealed.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: String,
    pub provider: String,
    pub label: String,
    pub sealed: Vec<u8>,
    pub enabled: bool,
    pub status: String,
    pub invalid_count: u32,
    pub last_check_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The host that worked for providers with several (Z.ai).
    pub base_url: Option<String>,
    pub created_ms: i64,
}

/// A client key row: the hash, never the key.
#[derive(Debug, Clone)]
pub struct ClientKeyRow {
    pub id: String,
    pub name: String,
    pub hash: [u8; 32],
    /// The first characters, so a person can tell keys apart.
    pub prefix: String,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    /// Its limits (SPEC 3.8) as JSON (`config::ClientLimits`), if any were set.
    pub limits: Option<String>,
}

/// An admin session: the token's hash, never the token.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub hash: [u8; 32],
    pub csrf: String,
    pub created_ms: i64,
    pub seen_ms: i64,
}

/// One entry of the persisted chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainRow {
    pub model: String,
    pub enabled: bool,
}

use crate::lessons::Lesson;
pub use crate::record::{AttemptRow, Kept, RequestRow};

impl Store {
    /// Open (creating) the database in `data_dir`, in WAL mode, with migrations applied.
    /// The database, its WAL and shared-memory files are private to the user (0600): SQLite
    /// gives the latter two the database file's mode, so the file is created that way first.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        let path = data_dir.join(DB_FILE);
        private_file(&path)
            .with_context(|| format!("cannot create the database {}", path.display()))?;
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the database {}", path.display()))?;
        let store = Self::init(conn)?;
        for suffix in ["-wal", "-shm"] {
            let extra = data_dir.join(format!("{DB_FILE}{suffix}"));
            if extra.exists() {
                private_file(&extra)?;
            }
        }
        Ok(store)
    }

    /// An in-memory database (tests).
    pub fn memory() -> anyhow::Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> anyhow::Result<Store> {
        engine::sqlite_init(&conn)?;
        migrations::apply(&conn)?;
        Ok(Store {
            engine: Engine::Sqlite(Mutex::new(conn)),
        })
    }

    /// Connect to PostgreSQL at `url` and bring its schema up to date (once, whichever replica
    /// comes first: the migration holds a lock). Errors never show the url's password.
    pub fn connect(url: &str) -> anyhow::Result<Store> {
        let pool = Pool::new(url)?;
        pool.with_client(migrations::apply_pg)
            .with_context(|| format!("cannot open the store at {}", pool.target))?;
        Ok(Store {
            engine: Engine::Postgres(Box::new(pool)),
        })
    }

    /// Which store this is, for logs and `freeway status` (never a password).
    pub fn describe(&self) -> String {
        match &self.engine {
            Engine::Sqlite(c) => {
                let c = c.lock().unwrap_or_else(|e| e.into_inner());
                match c.path().filter(|p| !p.is_empty()) {
                    Some(p) => format!("sqlite {p}"),
                    None => "sqlite in memory".into(),
                }
            }
            Engine::Postgres(p) => p.target.clone(),
        }
    }

    /// One call: on SQLite a statement at a time, on PostgreSQL one transaction.
    fn run<R: Send>(
        &self,
        f: impl FnOnce(&mut Db) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        crate::offload::assert_off_loop("a database call");
        match &self.engine {
            // A panic while holding the lock leaves SQLite consistent (statements are
            // atomic), so a poisoned lock is still usable.
            Engine::Sqlite(c) => f(&mut Db::Sqlite(
                &c.lock().unwrap_or_else(|e| e.into_inner()),
            )),
            Engine::Postgres(p) => p.tx(f),
        }
    }

    /// One transaction on either engine.
    fn tx<R: Send>(
        &self,
        f: impl FnOnce(&mut Db) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        crate::offload::assert_off_loop("a database call");
        match &self.engine {
            Engine::Sqlite(c) => {
                let mut conn = c.lock().unwrap_or_else(|e| e.into_inner());
                let tx = conn.transaction()?;
                let out = f(&mut Db::Sqlite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Engine::Postgres(p) => p.tx(f),
        }
    }

    /// Changes whenever something replicas (or a server beside the CLI) must reload was
    /// committed: on SQLite, any other connection's commit; on PostgreSQL, a counter bumped by
    /// triggers on keys, client keys, the chain, retirements, lessons and settings (not by
    /// the writes every replica makes all the time: ledger saves, client keys' last use).
    pub fn data_version(&self) -> anyhow::Result<i64> {
        self.run(|db| {
            let sql = if db.is_pg() {
                "SELECT n FROM changes"
            } else {
                "PRAGMA data_version"
            };
            Ok(db.row(sql, &[], |r| r.get(0))?.unwrap_or(0))
        })
    }

    // ---- settings ----

    pub fn setting(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        self.run(|db| {
            db.row(
                "SELECT value FROM settings WHERE key = ?1",
                &[key.into()],
                |r| r.get(0),
            )
        })
    }

    pub fn set_setting(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "INSERT INTO settings (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                &[key.into(), value.into()],
            )
            .map(drop)
        })
    }

    /// Set `key` unless it is set already; the value it holds afterwards.
    pub fn set_setting_once(&self, key: &str, value: &[u8]) -> anyhow::Result<Vec<u8>> {
        self.tx(|db| {
            db.exec(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                &[key.into(), value.into()],
            )?;
            Ok(db
                .row(
                    "SELECT value FROM settings WHERE key = ?1",
                    &[key.into()],
                    |r| r.get(0),
                )?
                .unwrap_or_default())
        })
    }

    pub fn delete_setting(&self, key: &str) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec("DELETE FROM settings WHERE key = ?1", &[key.into()])
                .map(drop)
        })
    }

    // ---- provider keys ----

    pub fn insert_key(&self, row: &KeyRow) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "INSERT INTO provider_keys (id, provider, label, sealed, enabled, status, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    (&row.id).into(),
                    (&row.provider).into(),
                    (&row.label).into(),
                    (&row.sealed).into(),
                    row.enabled.into(),
                    (&row.status).into(),
                    row.created_ms.into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn keys(&self) -> anyhow::Result<Vec<KeyRow>> {
        self.run(|db| {
            db.query(
                "SELECT id, provider, label, sealed, enabled, status, invalid_count, last_check_ms,
                        last_error, base_url, created_ms
                 FROM provider_keys ORDER BY provider, created_ms, id",
                &[],
                |r| {
                    Ok(KeyRow {
                        id: r.get(0)?,
                        provider: r.get(1)?,
                        label: r.get(2)?,
                        sealed: r.get(3)?,
                        enabled: r.get(4)?,
                        status: r.get(5)?,
                        invalid_count: u32::try_from(r.get::<i64>(6)?).unwrap_or(u32::MAX),
                        last_check_ms: r.get(7)?,
                        last_error: r.get(8)?,
                        base_url: r.get(9)?,
                        created_ms: r.get(10)?,
                    })
                },
            )
        })
    }

    /// Rows whose id starts with `prefix` (ids are shown shortened).
    pub fn find_keys(&self, prefix: &str) -> anyhow::Result<Vec<KeyRow>> {
        Ok(self
            .keys()?
            .into_iter()
            .filter(|k| k.id.starts_with(prefix))
            .collect())
    }

    pub fn remove_key(&self, id: &str) -> anyhow::Result<bool> {
        self.run(|db| Ok(db.exec("DELETE FROM provider_keys WHERE id = ?1", &[id.into()])? > 0))
    }

    /// Enabling a key also clears an `invalid` verdict: the user says it is good again.
    pub fn set_key_enabled(&self, id: &str, enabled: bool) -> anyhow::Result<bool> {
        let sql = if enabled {
            "UPDATE provider_keys SET enabled = TRUE, invalid_count = 0,
                 status = CASE status WHEN 'invalid' THEN 'unknown' ELSE status END WHERE id = ?1"
        } else {
            "UPDATE provider_keys SET enabled = FALSE WHERE id = ?1"
        };
        self.run(|db| Ok(db.exec(sql, &[id.into()])? > 0))
    }

    /// Record a health verdict. `disable` turns the key off (three confirmed rejections).
    pub fn set_key_health(
        &self,
        id: &str,
        status: &str,
        invalid_count: u32,
        error: Option<&str>,
        at_ms: i64,
        disable: bool,
    ) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "UPDATE provider_keys SET status = ?2, invalid_count = ?3, last_error = ?4,
                     last_check_ms = ?5, enabled = CASE WHEN ?6 THEN FALSE ELSE enabled END
                 WHERE id = ?1",
                &[
                    id.into(),
                    status.into(),
                    i64::from(invalid_count).into(),
                    error.into(),
                    at_ms.into(),
                    disable.into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn set_key_label(&self, id: &str, label: &str) -> anyhow::Result<bool> {
        self.run(|db| {
            Ok(db.exec(
                "UPDATE provider_keys SET label = ?2 WHERE id = ?1",
                &[id.into(), label.into()],
            )? > 0)
        })
    }

    pub fn set_key_base_url(&self, id: &str, base_url: &str) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "UPDATE provider_keys SET base_url = ?2 WHERE id = ?1",
                &[id.into(), base_url.into()],
            )
            .map(drop)
        })
    }

    // ---- client keys ----

    pub fn insert_client_key(&self, row: &ClientKeyRow) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "INSERT INTO client_keys (id, name, hash, prefix, created_ms, limits)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &[
                    (&row.id).into(),
                    (&row.name).into(),
                    row.hash.as_slice().into(),
                    (&row.prefix).into(),
                    row.created_ms.into(),
                    row.limits.as_deref().into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn client_keys(&self) -> anyhow::Result<Vec<ClientKeyRow>> {
        self.run(|db| {
            db.query(
                "SELECT id, name, hash, prefix, created_ms, revoked_ms, last_used_ms, limits
                 FROM client_keys ORDER BY created_ms, id",
                &[],
                |r| {
                    let hash: Vec<u8> = r.get(2)?;
                    Ok(ClientKeyRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        hash: hash.try_into().unwrap_or([0; 32]),
                        prefix: r.get(3)?,
                        created_ms: r.get(4)?,
                        revoked_ms: r.get(5)?,
                        last_used_ms: r.get(6)?,
                        limits: r.get(7)?,
                    })
                },
            )
        })
    }

    /// Set the limits of the live client keys named `name`; how many.
    pub fn set_client_limits(&self, name: &str, limits: Option<&str>) -> anyhow::Result<usize> {
        self.run(|db| {
            db.exec(
                "UPDATE client_keys SET limits = ?2 WHERE revoked_ms IS NULL AND name = ?1",
                &[name.into(), limits.into()],
            )
        })
    }

    /// Revoke by name or id prefix; returns how many keys were revoked.
    pub fn revoke_client_key(&self, name_or_id: &str, at_ms: i64) -> anyhow::Result<usize> {
        self.run(|db| {
            db.exec(
                "UPDATE client_keys SET revoked_ms = ?2
                 WHERE revoked_ms IS NULL AND (name = ?1 OR id = ?1)",
                &[name_or_id.into(), at_ms.into()],
            )
        })
    }

    /// When client keys (by id) were last used.
    pub fn touch_client_keys(&self, used: &[(String, i64)]) -> anyhow::Result<()> {
        // One order everywhere (no deadlock between replicas touching the same keys).
        let mut used: Vec<&(String, i64)> = used.iter().collect();
        used.sort();
        self.tx(|db| {
            for (id, at) in used {
                db.exec(
                    "UPDATE client_keys SET last_used_ms = ?2
                     WHERE id = ?1 AND (last_used_ms IS NULL OR last_used_ms < ?2)",
                    &[id.into(), (*at).into()],
                )?;
            }
            Ok(())
        })
    }

    // ---- admin sessions ----

    pub fn insert_session(&self, row: &SessionRow) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "INSERT INTO sessions (hash, csrf, created_ms, seen_ms) VALUES (?1, ?2, ?3, ?4)",
                &[
                    row.hash.as_slice().into(),
                    (&row.csrf).into(),
                    row.created_ms.into(),
                    row.seen_ms.into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn session(&self, hash: &[u8; 32]) -> anyhow::Result<Option<SessionRow>> {
        self.run(|db| {
            db.row(
                "SELECT csrf, created_ms, seen_ms FROM sessions WHERE hash = ?1",
                &[hash.as_slice().into()],
                |r| {
                    Ok(SessionRow {
                        hash: *hash,
                        csrf: r.get(0)?,
                        created_ms: r.get(1)?,
                        seen_ms: r.get(2)?,
                    })
                },
            )
        })
    }

    pub fn touch_session(&self, hash: &[u8; 32], seen_ms: i64) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "UPDATE sessions SET seen_ms = ?2 WHERE hash = ?1",
                &[hash.as_slice().into(), seen_ms.into()],
            )
            .map(drop)
        })
    }

    /// End one session, or (with `None`) every session; also drops those idle since
    /// `idle_before`.
    pub fn end_sessions(&self, hash: Option<&[u8; 32]>, idle_before: i64) -> anyhow::Result<()> {
        self.run(|db| {
            match hash {
                Some(h) => db.exec(
                    "DELETE FROM sessions WHERE hash = ?1",
                    &[h.as_slice().into()],
                )?,
                None => db.exec("DELETE FROM sessions", &[])?,
            };
            db.exec(
                "DELETE FROM sessions WHERE seen_ms < ?1",
                &[idle_before.into()],
            )?;
            Ok(())
        })
    }

    // ---- chain ----

    pub fn chain(&self) -> anyhow::Result<Vec<ChainRow>> {
        self.run(|db| {
            db.query(
                "SELECT model, enabled FROM chain ORDER BY position",
                &[],
                |r| {
                    Ok(ChainRow {
                        model: r.get(0)?,
                        enabled: r.get(1)?,
                    })
                },
            )
        })
    }

    pub fn set_chain(&self, rows: &[ChainRow]) -> anyhow::Result<()> {
        self.tx(|db| {
            db.exec("DELETE FROM chain", &[])?;
            for (i, row) in (0i64..).zip(rows) {
                db.exec(
                    "INSERT INTO chain (position, model, enabled) VALUES (?1, ?2, ?3)",
                    &[i.into(), (&row.model).into(), row.enabled.into()],
                )?;
            }
            Ok(())
        })
    }

    /// Models a provider retired: (reference, why).
    pub fn retired(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.run(|db| {
            db.query(
                "SELECT model, reason FROM retired ORDER BY at_ms, model",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Record that a provider retired a model (a later report keeps the first).
    pub fn retire(&self, model: &str, reason: &str, at_ms: i64) -> anyhow::Result<()> {
        self.run(|db| {
            db.exec(
                "INSERT INTO retired (model, reason, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                &[model.into(), reason.into(), at_ms.into()],
            )
            .map(drop)
        })
    }

    /// The user enabled a retired model again; whether it was retired.
    pub fn unretire(&self, model: &str) -> anyhow::Result<bool> {
        self.run(|db| Ok(db.exec("DELETE FROM retired WHERE model = ?1", &[model.into()])? > 0))
    }

    // ---- idempotency (SPEC 2.8) ----

    /// The answer kept for `client`'s Idempotency-Key `key`, written at or after `since_ms`.
    pub fn idempotent(
        &self,
        client: &str,
        key: &str,
        since_ms: i64,
    ) -> anyhow::Result<Option<Kept>> {
        self.run(|db| {
            db.row(
                "SELECT fingerprint, status, headers, body, at_ms FROM idempotency
                 WHERE client = ?1 AND key = ?2 AND at_ms >= ?3",
                &[client.into(), key.into(), since_ms.into()],
                |r| {
                    Ok(Kept {
                        fingerprint: r.get(0)?,
                        status: u16::try_from(r.get::<i64>(1)?).unwrap_or(500),
                        headers: serde_json::from_str(&r.get::<String>(2)?).unwrap_or_default(),
                        body: r.get(3)?,
                        at_ms: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Keep an answer for an Idempotency-Key (a later one for the same key replaces it).
    pub fn keep_idempotent(&self, client: &str, key: &str, kept: &Kept) -> anyhow::Result<()> {
        let headers = serde_json::to_string(&kept.headers)?;
        self.run(|db| {
            db.exec(
                "INSERT INTO idempotency (client, key, fingerprint, status, headers, body, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(client, key) DO UPDATE SET fingerprint = excluded.fingerprint,
                     status = excluded.status, headers = excluded.headers, body = excluded.body,
                     at_ms = excluded.at_ms",
                &[
                    client.into(),
                    key.into(),
                    (&kept.fingerprint).into(),
                    i64::from(kept.status).into(),
                    (&headers).into(),
                    (&kept.body).into(),
                    kept.at_ms.into(),
                ],
            )
            .map(drop)
        })
    }

    /// Forget answers kept before `before_ms`.
    pub fn prune_idempotent(&self, before_ms: i64) -> anyhow::Result<usize> {
        self.run(|db| {
            db.exec(
                "DELETE FROM idempotency WHERE at_ms < ?1",
                &[before_ms.into()],
            )
        })
    }

    // ---- lessons (SPEC 3.9) ----

    /// Every stored lesson: (model, lesson, the upstream's words), oldest first.
    pub fn lessons(&self) -> anyhow::Result<Vec<(String, Lesson, String)>> {
        let rows = self.run(|db| {
            db.query(
                "SELECT model, kind, field, reason FROM lessons ORDER BY at_ms, model, kind, field",
                &[],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                        r.get::<String>(3)?,
                    ))
                },
            )
        })?;
        // A kind this build does not know (written by a newer one) is left alone.
        Ok(rows
            .into_iter()
            .filter_map(|(m, kind, field, why)| Some((m, Lesson::decode(&kind, &field)?, why)))
            .collect())
    }

    /// Record a lesson (a later report of the same keeps the first).
    pub fn learn(
        &self,
        model: &str,
        lesson: &Lesson,
        reason: &str,
        at_ms: i64,
    ) -> anyhow::Result<()> {
        let (kind, field) = lesson.encode();
        self.run(|db| {
            db.exec(
                "INSERT INTO lessons (model, kind, field, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
                &[
                    model.into(),
                    kind.into(),
                    field.into(),
                    reason.into(),
                    at_ms.into(),
                ],
            )
            .map(drop)
        })
    }

    /// Forget the lessons of `model`, or of every model; how many.
    pub fn forget_lessons(&self, model: Option<&str>) -> anyhow::Result<usize> {
        self.run(|db| match model {
            Some(m) => db.exec("DELETE FROM lessons WHERE model = ?1", &[m.into()]),
            None => db.exec("DELETE FROM lessons", &[]),
        })
    }

    // ---- ledger ----

    /// Replace the stored state of these scopes (counters as JSON) and cooldowns; `seq` is the
    /// last reservation-journal entry they hold.
    pub fn save_ledger(
        &self,
        scopes: &[(String, String)],
        cooldowns: &[(String, i64, String)],
        at_ms: i64,
        seq: u64,
    ) -> anyhow::Result<()> {
        let seq = seq.to_string().into_bytes();
        // Rows in one order everywhere: replicas saving at once on one PostgreSQL take their
        // row locks in the same order, so they wait for each other instead of deadlocking.
        let mut scopes: Vec<&(String, String)> = scopes.iter().collect();
        scopes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut cooldowns: Vec<&(String, i64, String)> = cooldowns.iter().collect();
        cooldowns.sort_by(|a, b| a.0.cmp(&b.0));
        self.tx(|db| {
            for (scope, state) in scopes {
                db.exec(
                    "INSERT INTO ledger (scope, state, updated_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT(scope) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
                    &[scope.into(), state.into(), at_ms.into()],
                )?;
            }
            // The active cooldowns replace the saved ones; upserted, since another replica
            // saving at once on PostgreSQL may insert the same scope between this delete and
            // this insert.
            db.exec("DELETE FROM cooldowns", &[])?;
            for (scope, until, reason) in cooldowns {
                db.exec(
                    "INSERT INTO cooldowns (scope, until_ms, reason) VALUES (?1, ?2, ?3)
                     ON CONFLICT(scope) DO UPDATE SET until_ms = excluded.until_ms, reason = excluded.reason",
                    &[scope.into(), (*until).into(), reason.into()],
                )?;
            }
            db.exec(
                "INSERT INTO settings (key, value) VALUES ('ledger_seq', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                &[(&seq).into()],
            )?;
            Ok(())
        })
    }

    /// The last reservation-journal entry the saved counters hold.
    pub fn ledger_seq(&self) -> anyhow::Result<u64> {
        Ok(self
            .setting("ledger_seq")?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    pub fn load_ledger(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.run(|db| {
            db.query("SELECT scope, state FROM ledger", &[], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
    }

    pub fn load_cooldowns(&self) -> anyhow::Result<Vec<(String, i64, String)>> {
        self.run(|db| {
            db.query("SELECT scope, until_ms, reason FROM cooldowns", &[], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        })
    }

    // ---- request log ----

    /// Write a batch of requests with their attempts in one transaction.
    pub fn insert_requests(&self, rows: &[RequestRow]) -> anyhow::Result<()> {
        self.tx(|db| {
            if db.is_pg() {
                // Each replica merges its batch into the same hourly rollups (read, merge,
                // write): one writer at a time, or two merges of one hour would lose counts.
                db.exec("SELECT pg_advisory_xact_lock(7046023985)", &[])?;
            }
            for r in rows {
                let attempts = serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into());
                db.exec(
                    "INSERT INTO requests (id, at_ms, client, requested_model, served_by, status,
                         latency_ms, ttft_ms, tokens_in, tokens_out, stream, error, attempts, surface, notes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                    &[
                        (&r.id).into(),
                        r.at_ms.into(),
                        (&r.client).into(),
                        (&r.requested_model).into(),
                        r.served_by.as_deref().into(),
                        i64::from(r.status).into(),
                        (r.latency_ms as i64).into(),
                        r.ttft_ms.map(|v| v as i64).into(),
                        (r.tokens_in as i64).into(),
                        (r.tokens_out as i64).into(),
                        r.stream.into(),
                        r.error.as_deref().into(),
                        (&attempts).into(),
                        r.surface.as_deref().into(),
                        r.notes.as_deref().into(),
                    ],
                )?;
            }
            for ((hour, provider, model, client), add) in crate::analytics::rollups(rows) {
                let mut r = db
                    .row(
                        "SELECT requests, succeeded, failed, cancelled, tokens_in, tokens_out,
                                failed_attempts, latency, ttft
                         FROM rollups WHERE hour = ?1 AND provider = ?2 AND model = ?3 AND client = ?4",
                        &[hour.into(), (&provider).into(), (&model).into(), (&client).into()],
                        read_rollup,
                    )?
                    .unwrap_or_default();
                r.merge(&add);
                let (latency, ttft) = (
                    serde_json::to_string(&r.latency).unwrap_or_default(),
                    serde_json::to_string(&r.ttft).unwrap_or_default(),
                );
                db.exec(
                    "INSERT INTO rollups (hour, provider, model, client, requests, succeeded,
                         failed, cancelled, tokens_in, tokens_out, failed_attempts, latency, ttft)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT(hour, provider, model, client) DO UPDATE SET
                         requests = excluded.requests, succeeded = excluded.succeeded,
                         failed = excluded.failed, cancelled = excluded.cancelled,
                         tokens_in = excluded.tokens_in, tokens_out = excluded.tokens_out,
                         failed_attempts = excluded.failed_attempts,
                         latency = excluded.latency, ttft = excluded.ttft",
                    &[
                        hour.into(),
                        (&provider).into(),
                        (&model).into(),
                        (&client).into(),
                        (r.requests as i64).into(),
                        (r.succeeded as i64).into(),
                        (r.failed as i64).into(),
                        (r.cancelled as i64).into(),
                        (r.tokens_in as i64).into(),
                        (r.tokens_out as i64).into(),
                        (r.failed_attempts as i64).into(),
                        (&latency).into(),
                        (&ttft).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// The rollups of every hour from `from_ms` on.
    pub fn rollups(
        &self,
        from_ms: i64,
    ) -> anyhow::Result<Vec<(crate::analytics::Key, crate::analytics::Rollup)>> {
        self.run(|db| {
            db.query(
                "SELECT requests, succeeded, failed, cancelled, tokens_in, tokens_out,
                        failed_attempts, latency, ttft, hour, provider, model, client
                 FROM rollups WHERE hour >= ?1 ORDER BY hour, provider, model, client",
                &[from_ms.into()],
                |r| {
                    let rollup = read_rollup(r)?;
                    Ok(((r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?), rollup))
                },
            )
        })
    }

    /// Requests logged per hour from `from_ms` on: (hour start, requests), from the rollups
    /// (what pacing by demand learns from).
    pub fn requests_per_hour(&self, from_ms: i64) -> anyhow::Result<Vec<(i64, u64)>> {
        self.run(|db| {
            db.query(
                "SELECT hour, CAST(SUM(requests) AS BIGINT) FROM rollups WHERE hour >= ?1
                 GROUP BY hour ORDER BY hour",
                &[from_ms.into()],
                |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?.max(0) as u64)),
            )
        })
    }

    /// The newest requests, newest first, with their attempts.
    pub fn recent_requests(&self, limit: usize) -> anyhow::Result<Vec<RequestRow>> {
        self.requests_before(None, limit)
    }

    /// Requests logged before the one with id `before` (or the newest), newest first.
    pub fn requests_before(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<RequestRow>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.tx(|db| {
            let before_seq: i64 = match before {
                Some(id) => db
                    .row(
                        "SELECT MAX(seq) FROM requests WHERE id = ?1",
                        &[id.into()],
                        |r| r.get::<Option<i64>>(0),
                    )?
                    .flatten()
                    .unwrap_or(i64::MIN),
                None => i64::MAX,
            };
            let mut rows = db.query(
                "SELECT id, at_ms, client, requested_model, served_by, status, latency_ms, ttft_ms,
                        tokens_in, tokens_out, stream, error, attempts, surface, notes
                 FROM requests WHERE seq < ?2 ORDER BY seq DESC LIMIT ?1",
                &[limit.into(), before_seq.into()],
                |r| {
                    Ok(RequestRow {
                        id: r.get(0)?,
                        at_ms: r.get(1)?,
                        client: r.get(2)?,
                        requested_model: r.get(3)?,
                        served_by: r.get(4)?,
                        status: u16::try_from(r.get::<i64>(5)?).unwrap_or(0),
                        latency_ms: r.get::<i64>(6)?.max(0) as u64,
                        ttft_ms: r.get::<Option<i64>>(7)?.map(|v| v.max(0) as u64),
                        tokens_in: r.get::<i64>(8)?.max(0) as u64,
                        tokens_out: r.get::<i64>(9)?.max(0) as u64,
                        stream: r.get(10)?,
                        error: r.get(11)?,
                        attempts: r
                            .get::<Option<String>>(12)?
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .unwrap_or_default(),
                        surface: r.get(13)?,
                        notes: r.get(14)?,
                    })
                },
            )?;
            // Rows from before SQLite migration 2 keep their attempts in their own table.
            for row in rows.iter_mut().filter(|r| r.attempts.is_empty()) {
                row.attempts = db.query(
                    "SELECT target, key_id, outcome, status, latency_ms FROM attempts
                     WHERE request_id = ?1 ORDER BY n",
                    &[(&row.id).into()],
                    |r| {
                        Ok(AttemptRow {
                            target: r.get(0)?,
                            key_id: r.get(1)?,
                            outcome: r.get(2)?,
                            status: r.get::<Option<i64>>(3)?.and_then(|s| u16::try_from(s).ok()),
                            latency_ms: r.get::<i64>(4)?.max(0) as u64,
                            error: None,
                        })
                    },
                )?;
            }
            Ok(rows)
        })
    }

    pub fn count_requests(&self) -> anyhow::Result<u64> {
        self.run(|db| {
            Ok(db
                .row("SELECT COUNT(*) FROM requests", &[], |r| r.get::<i64>(0))?
                .unwrap_or(0)
                .max(0) as u64)
        })
    }

    /// Drop requests, and their hourly rollups, older than `before_ms`, `batch` requests per
    /// transaction (the lock is let go between batches); returns how many requests.
    pub fn prune_requests(&self, before_ms: i64, batch: usize) -> anyhow::Result<usize> {
        let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
        // Hours wholly before the cut lose their rollups.
        let hour_cut = before_ms - before_ms % 3_600_000;
        let mut total = 0;
        loop {
            let done = self.tx(|db| {
                let upto = db
                    .row(
                        "SELECT MAX(s) FROM (SELECT seq AS s FROM requests WHERE at_ms < ?1
                             ORDER BY seq LIMIT ?2) AS oldest",
                        &[before_ms.into(), batch.into()],
                        |r| r.get::<Option<i64>>(0),
                    )?
                    .flatten();
                let Some(upto) = upto else {
                    db.exec("DELETE FROM rollups WHERE hour < ?1", &[hour_cut.into()])?;
                    return Ok(None);
                };
                db.exec(
                    "DELETE FROM attempts WHERE request_id IN
                     (SELECT id FROM requests WHERE at_ms < ?1 AND seq <= ?2)",
                    &[before_ms.into(), upto.into()],
                )?;
                Ok(Some(db.exec(
                    "DELETE FROM requests WHERE at_ms < ?1 AND seq <= ?2",
                    &[before_ms.into(), upto.into()],
                )?))
            })?;
            match done {
                Some(n) => total += n,
                None => return Ok(total),
            }
        }
    }
}

/// A rollup from a row whose first nine columns are its counts and histograms.
fn read_rollup(r: &Row) -> anyhow::Result<crate::analytics::Rollup> {
    let hist = |i: usize| -> anyhow::Result<crate::analytics::Histogram> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    let count = |i: usize| -> anyhow::Result<u64> { Ok(r.get::<i64>(i)?.max(0) as u64) };
    Ok(crate::analytics::Rollup {
        requests: count(0)?,
        succeeded: count(1)?,
        failed: count(2)?,
        cancelled: count(3)?,
        tokens_in: count(4)?,
        tokens_out: count(5)?,
        failed_attempts: count(6)?,
        latency: hist(7)?,
        ttft: hist(8)?,
    })
}

/// Create `path` if missing, readable and writable by its owner only (whatever the umask), and
/// make an existing one so.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        options.open(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    options.open(path).map(drop)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before migration 3 keeps its rows and their attempts.
    #[test]
    fn old_request_rows_survive_the_migrations() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(migrations::FIRST_STEP).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO requests (id, at_ms, client, requested_model, served_by, status, latency_ms,
                 ttft_ms, tokens_in, tokens_out, stream, error)
             VALUES ('old', 5, 'c', 'auto', 'groq/x', 200, 10, 3, 1, 2, 0, NULL);
             INSERT INTO attempts (request_id, n, target, key_id, outcome, status, latency_ms)
             VALUES ('old', 0, 'groq/x', 'k', 'ok', 200, 10);",
        )
        .unwrap();
        let store = Store::init(conn).unwrap();
        store
            .insert_requests(&[RequestRow {
                id: "new".into(),
                at_ms: 9,
                attempts: vec![AttemptRow {
                    target: "a/b".into(),
                    outcome: "ok".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }])
            .unwrap();
        let rows = store.recent_requests(10).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].id.as_str(), rows[0].attempts[0].target.as_str()),
            ("new", "a/b")
        );
        assert_eq!(
            (rows[1].id.as_str(), rows[1].attempts[0].target.as_str()),
            ("old", "groq/x")
        );
        assert_eq!(rows[1].ttft_ms, Some(3));
    }
}
