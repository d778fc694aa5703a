//! SQLite storage: the only module that writes SQL.
//!
//! One connection behind a `std::sync::Mutex` (never held across an `.await`; async callers go
//! through `offload::run`, and a call from the event loop is caught by its guard). WAL mode, so the CLI and a running server share the file. The
//! request path never waits on it: counters live in memory and reach the database from
//! background tasks.

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

mod migrations;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "freeway.db";

/// Shared handle to the database.
pub struct Store {
    conn: Mutex<Connection>,
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
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        crate::offload::assert_off_loop("a database call");
        // A panic while holding the lock leaves SQLite consistent (statements are atomic), so a
        // poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes whenever another connection commits: a cheap "did the CLI change something".
    pub fn data_version(&self) -> anyhow::Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    // ---- settings ----

    pub fn setting(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- provider keys ----

    pub fn insert_key(&self, row: &KeyRow) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO provider_keys (id, provider, label, sealed, enabled, status, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                row.id,
                row.provider,
                row.label,
                row.sealed,
                row.enabled,
                row.status,
                row.created_ms
            ],
        )?;
        Ok(())
    }

    pub fn keys(&self) -> anyhow::Result<Vec<KeyRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, provider, label, sealed, enabled, status, invalid_count, last_check_ms,
                    last_error, base_url, created_ms
             FROM provider_keys ORDER BY provider, created_ms, id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyRow {
                    id: r.get(0)?,
                    provider: r.get(1)?,
                    label: r.get(2)?,
                    sealed: r.get(3)?,
                    enabled: r.get(4)?,
                    status: r.get(5)?,
                    invalid_count: r.get(6)?,
                    last_check_ms: r.get(7)?,
                    last_error: r.get(8)?,
                    base_url: r.get(9)?,
                    created_ms: r.get(10)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
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
        Ok(self
            .conn()
            .execute("DELETE FROM provider_keys WHERE id = ?1", [id])?
            > 0)
    }

    /// Enabling a key also clears an `invalid` verdict: the user says it is good again.
    pub fn set_key_enabled(&self, id: &str, enabled: bool) -> anyhow::Result<bool> {
        let sql = if enabled {
            "UPDATE provider_keys SET enabled = 1, invalid_count = 0,
                 status = CASE status WHEN 'invalid' THEN 'unknown' ELSE status END WHERE id = ?1"
        } else {
            "UPDATE provider_keys SET enabled = 0 WHERE id = ?1"
        };
        Ok(self.conn().execute(sql, [id])? > 0)
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
        self.conn().execute(
            "UPDATE provider_keys SET status = ?2, invalid_count = ?3, last_error = ?4,
                 last_check_ms = ?5, enabled = CASE WHEN ?6 THEN 0 ELSE enabled END
             WHERE id = ?1",
            params![id, status, invalid_count, error, at_ms, disable],
        )?;
        Ok(())
    }

    pub fn set_key_label(&self, id: &str, label: &str) -> anyhow::Result<bool> {
        Ok(self.conn().execute(
            "UPDATE provider_keys SET label = ?2 WHERE id = ?1",
            params![id, label],
        )? > 0)
    }

    pub fn set_key_base_url(&self, id: &str, base_url: &str) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE provider_keys SET base_url = ?2 WHERE id = ?1",
            params![id, base_url],
        )?;
        Ok(())
    }

    // ---- client keys ----

    pub fn insert_client_key(&self, row: &ClientKeyRow) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO client_keys (id, name, hash, prefix, created_ms, limits) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![row.id, row.name, row.hash.as_slice(), row.prefix, row.created_ms, row.limits],
        )?;
        Ok(())
    }

    pub fn client_keys(&self) -> anyhow::Result<Vec<ClientKeyRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, name, hash, prefix, created_ms, revoked_ms, last_used_ms, limits
             FROM client_keys ORDER BY created_ms, id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let hash: Vec<u8> = r.get(2)?;
                let mut h = [0u8; 32];
                if hash.len() == 32 {
                    h.copy_from_slice(&hash);
                }
                Ok(ClientKeyRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    hash: h,
                    prefix: r.get(3)?,
                    created_ms: r.get(4)?,
                    revoked_ms: r.get(5)?,
                    last_used_ms: r.get(6)?,
                    limits: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Set the limits of the live client keys named `name`; how many.
    pub fn set_client_limits(&self, name: &str, limits: Option<&str>) -> anyhow::Result<usize> {
        Ok(self.conn().execute(
            "UPDATE client_keys SET limits = ?2 WHERE revoked_ms IS NULL AND name = ?1",
            params![name, limits],
        )?)
    }

    /// Revoke by name or id prefix; returns how many keys were revoked.
    pub fn revoke_client_key(&self, name_or_id: &str, at_ms: i64) -> anyhow::Result<usize> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE client_keys SET revoked_ms = ?2
             WHERE revoked_ms IS NULL AND (name = ?1 OR id = ?1)",
            params![name_or_id, at_ms],
        )?;
        Ok(n)
    }

    /// When client keys (by id) were last used.
    pub fn touch_client_keys(&self, used: &[(String, i64)]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (id, at) in used {
            tx.execute(
                "UPDATE client_keys SET last_used_ms = MAX(COALESCE(last_used_ms, 0), ?2) WHERE id = ?1",
                params![id, at],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    // ---- admin sessions ----

    pub fn insert_session(&self, row: &SessionRow) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT INTO sessions (hash, csrf, created_ms, seen_ms) VALUES (?1, ?2, ?3, ?4)",
            params![row.hash.as_slice(), row.csrf, row.created_ms, row.seen_ms],
        )?;
        Ok(())
    }

    pub fn session(&self, hash: &[u8; 32]) -> anyhow::Result<Option<SessionRow>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT csrf, created_ms, seen_ms FROM sessions WHERE hash = ?1",
                [hash.as_slice()],
                |r| {
                    Ok(SessionRow {
                        hash: *hash,
                        csrf: r.get(0)?,
                        created_ms: r.get(1)?,
                        seen_ms: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn touch_session(&self, hash: &[u8; 32], seen_ms: i64) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE sessions SET seen_ms = ?2 WHERE hash = ?1",
            params![hash.as_slice(), seen_ms],
        )?;
        Ok(())
    }

    /// End one session, or (with `None`) every session; also drops those idle since
    /// `idle_before`.
    pub fn end_sessions(&self, hash: Option<&[u8; 32]>, idle_before: i64) -> anyhow::Result<()> {
        let conn = self.conn();
        match hash {
            Some(h) => conn.execute("DELETE FROM sessions WHERE hash = ?1", [h.as_slice()])?,
            None => conn.execute("DELETE FROM sessions", [])?,
        };
        conn.execute("DELETE FROM sessions WHERE seen_ms < ?1", [idle_before])?;
        Ok(())
    }

    pub fn delete_setting(&self, key: &str) -> anyhow::Result<()> {
        self.conn()
            .execute("DELETE FROM settings WHERE key = ?1", [key])?;
        Ok(())
    }

    // ---- chain ----

    pub fn chain(&self) -> anyhow::Result<Vec<ChainRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT model, enabled FROM chain ORDER BY position")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ChainRow {
                    model: r.get(0)?,
                    enabled: r.get(1)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn set_chain(&self, rows: &[ChainRow]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM chain", [])?;
        for (i, row) in rows.iter().enumerate() {
            tx.execute(
                "INSERT INTO chain (position, model, enabled) VALUES (?1, ?2, ?3)",
                params![i as i64, row.model, row.enabled],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Models a provider retired: (reference, why).
    pub fn retired(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT model, reason FROM retired ORDER BY at_ms")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Record that a provider retired a model (a later report keeps the first).
    pub fn retire(&self, model: &str, reason: &str, at_ms: i64) -> anyhow::Result<()> {
        self.conn().execute(
            "INSERT OR IGNORE INTO retired (model, reason, at_ms) VALUES (?1, ?2, ?3)",
            params![model, reason, at_ms],
        )?;
        Ok(())
    }

    /// The user enabled a retired model again; whether it was retired.
    pub fn unretire(&self, model: &str) -> anyhow::Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM retired WHERE model = ?1", [model])?
            > 0)
    }

    // ---- idempotency (SPEC 2.8) ----

    /// The answer kept for `client`'s Idempotency-Key `key`, written at or after `since_ms`.
    pub fn idempotent(
        &self,
        client: &str,
        key: &str,
        since_ms: i64,
    ) -> anyhow::Result<Option<Kept>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT fingerprint, status, headers, body, at_ms FROM idempotency
                 WHERE client = ?1 AND key = ?2 AND at_ms >= ?3",
                params![client, key, since_ms],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, u16>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.map(|(fingerprint, status, headers, body, at_ms)| Kept {
            fingerprint,
            status,
            headers: serde_json::from_str(&headers).unwrap_or_default(),
            body,
            at_ms,
        }))
    }

    /// Keep an answer for an Idempotency-Key (a later one for the same key replaces it).
    pub fn keep_idempotent(&self, client: &str, key: &str, kept: &Kept) -> anyhow::Result<()> {
        let headers = serde_json::to_string(&kept.headers)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO idempotency (client, key, fingerprint, status, headers, body, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![client, key, kept.fingerprint, kept.status, headers, kept.body, kept.at_ms],
        )?;
        Ok(())
    }

    /// Forget answers kept before `before_ms`.
    pub fn prune_idempotent(&self, before_ms: i64) -> anyhow::Result<usize> {
        Ok(self.conn().execute(
            "DELETE FROM idempotency WHERE at_ms < ?1",
            params![before_ms],
        )?)
    }

    // ---- lessons (SPEC 3.9) ----

    /// Every stored lesson: (model, lesson, the upstream's words), oldest first.
    pub fn lessons(&self) -> anyhow::Result<Vec<(String, Lesson, String)>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT model, kind, field, reason FROM lessons ORDER BY at_ms, rowid")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
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
        self.conn().execute(
            "INSERT OR IGNORE INTO lessons (model, kind, field, reason, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![model, kind, field, reason, at_ms],
        )?;
        Ok(())
    }

    /// Forget the lessons of `model`, or of every model; how many.
    pub fn forget_lessons(&self, model: Option<&str>) -> anyhow::Result<usize> {
        Ok(match model {
            Some(m) => self
                .conn()
                .execute("DELETE FROM lessons WHERE model = ?1", [m])?,
            None => self.conn().execute("DELETE FROM lessons", [])?,
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (scope, state) in scopes {
            tx.execute(
                "INSERT INTO ledger (scope, state, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scope) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
                params![scope, state, at_ms],
            )?;
        }
        tx.execute("DELETE FROM cooldowns", [])?;
        for (scope, until, reason) in cooldowns {
            tx.execute(
                "INSERT INTO cooldowns (scope, until_ms, reason) VALUES (?1, ?2, ?3)",
                params![scope, until, reason],
            )?;
        }
        tx.execute(
            "INSERT INTO settings (key, value) VALUES ('ledger_seq', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![seq.to_string().into_bytes()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The last reservation-journal entry the saved counters hold.
    pub fn ledger_seq(&self) -> anyhow::Result<u64> {
        Ok(self
            .setting("ledger_seq")?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    pub fn load_ledger(&self) -> anyhow::Result<Vec<(String, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT scope, state FROM ledger")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    pub fn load_cooldowns(&self) -> anyhow::Result<Vec<(String, i64, String)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT scope, until_ms, reason FROM cooldowns")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    // ---- request log ----

    /// Write a batch of requests with their attempts in one transaction.
    pub fn insert_requests(&self, rows: &[RequestRow]) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut req = tx.prepare_cached(
                "INSERT INTO requests (id, at_ms, client, requested_model, served_by, status,
                     latency_ms, ttft_ms, tokens_in, tokens_out, stream, error, attempts, surface, notes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            for r in rows {
                let attempts = serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into());
                req.execute(params![
                    r.id,
                    r.at_ms,
                    r.client,
                    r.requested_model,
                    r.served_by,
                    r.status,
                    r.latency_ms as i64,
                    r.ttft_ms.map(|v| v as i64),
                    r.tokens_in as i64,
                    r.tokens_out as i64,
                    r.stream,
                    r.error,
                    attempts,
                    r.surface,
                    r.notes
                ])?;
            }
            let mut get = tx.prepare_cached(
                "SELECT requests, succeeded, failed, cancelled, tokens_in, tokens_out,
                        failed_attempts, latency, ttft
                 FROM rollups WHERE hour = ?1 AND provider = ?2 AND model = ?3 AND client = ?4",
            )?;
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO rollups (hour, provider, model, client, requests, succeeded,
                     failed, cancelled, tokens_in, tokens_out, failed_attempts, latency, ttft)
                 VALUES (?1, ?2, ?3, ?13, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            for ((hour, provider, model, client), add) in crate::analytics::rollups(rows) {
                let mut r = get
                    .query_row(params![hour, provider, model, client], read_rollup)
                    .optional()?
                    .unwrap_or_default();
                r.merge(&add);
                put.execute(params![
                    hour,
                    provider,
                    model,
                    r.requests as i64,
                    r.succeeded as i64,
                    r.failed as i64,
                    r.cancelled as i64,
                    r.tokens_in as i64,
                    r.tokens_out as i64,
                    r.failed_attempts as i64,
                    serde_json::to_string(&r.latency).unwrap_or_default(),
                    serde_json::to_string(&r.ttft).unwrap_or_default(),
                    client,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The rollups of every hour from `from_ms` on.
    pub fn rollups(
        &self,
        from_ms: i64,
    ) -> anyhow::Result<Vec<(crate::analytics::Key, crate::analytics::Rollup)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT requests, succeeded, failed, cancelled, tokens_in, tokens_out,
                    failed_attempts, latency, ttft, hour, provider, model, client
             FROM rollups WHERE hour >= ?1 ORDER BY hour",
        )?;
        let rows = stmt
            .query_map([from_ms], |r| {
                let rollup = read_rollup(r)?;
                Ok(((r.get(9)?, r.get(10)?, r.get(11)?, r.get(12)?), rollup))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Requests logged per hour from `from_ms` on: (hour start, requests), from the rollups
    /// (what pacing by demand learns from).
    pub fn requests_per_hour(&self, from_ms: i64) -> anyhow::Result<Vec<(i64, u64)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT hour, SUM(requests) FROM rollups WHERE hour >= ?1 GROUP BY hour ORDER BY hour",
        )?;
        let rows = stmt
            .query_map([from_ms], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
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
        let conn = self.conn();
        let before_seq: i64 = match before {
            Some(id) => conn
                .query_row("SELECT MAX(seq) FROM requests WHERE id = ?1", [id], |r| {
                    r.get::<_, Option<i64>>(0)
                })?
                .unwrap_or(i64::MIN),
            None => i64::MAX,
        };
        let mut stmt = conn.prepare(
            "SELECT id, at_ms, client, requested_model, served_by, status, latency_ms, ttft_ms,
                    tokens_in, tokens_out, stream, error, attempts, surface, notes
             FROM requests WHERE seq < ?2 ORDER BY seq DESC LIMIT ?1",
        )?;
        let mut rows = stmt
            .query_map(params![limit as i64, before_seq], |r| {
                Ok(RequestRow {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    client: r.get(2)?,
                    requested_model: r.get(3)?,
                    served_by: r.get(4)?,
                    status: r.get(5)?,
                    latency_ms: r.get::<_, i64>(6)? as u64,
                    ttft_ms: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                    tokens_in: r.get::<_, i64>(8)? as u64,
                    tokens_out: r.get::<_, i64>(9)? as u64,
                    stream: r.get(10)?,
                    error: r.get(11)?,
                    attempts: r
                        .get::<_, Option<String>>(12)?
                        .and_then(|j| serde_json::from_str(&j).ok())
                        .unwrap_or_default(),
                    surface: r.get(13)?,
                    notes: r.get(14)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut att = conn.prepare(
            "SELECT target, key_id, outcome, status, latency_ms FROM attempts
             WHERE request_id = ?1 ORDER BY n",
        )?;
        // Rows from before migration 2 keep their attempts in their own table.
        for row in rows.iter_mut().filter(|r| r.attempts.is_empty()) {
            row.attempts = att
                .query_map([&row.id], |r| {
                    Ok(AttemptRow {
                        target: r.get(0)?,
                        key_id: r.get(1)?,
                        outcome: r.get(2)?,
                        status: r.get(3)?,
                        latency_ms: r.get::<_, i64>(4)? as u64,
                        error: None,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
        }
        Ok(rows)
    }

    pub fn count_requests(&self) -> anyhow::Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT COUNT(*) FROM requests", [], |r| r.get::<_, i64>(0))?
            as u64)
    }

    /// Drop requests, and their hourly rollups, older than `before_ms`, `batch` requests per
    /// transaction (the lock is let go between batches); returns how many requests.
    pub fn prune_requests(&self, before_ms: i64, batch: usize) -> anyhow::Result<usize> {
        let batch = batch.max(1) as i64;
        let mut total = 0;
        loop {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let upto: Option<i64> = tx.query_row(
                "SELECT MAX(id) FROM (SELECT rowid AS id FROM requests WHERE at_ms < ?1 ORDER BY rowid LIMIT ?2)",
                params![before_ms, batch],
                |r| r.get(0),
            )?;
            let Some(upto) = upto else {
                tx.execute(
                    "DELETE FROM rollups WHERE hour < ?1 - (?1 % 3600000)",
                    [before_ms],
                )?;
                tx.commit()?;
                return Ok(total);
            };
            tx.execute(
                "DELETE FROM attempts WHERE request_id IN \
                 (SELECT id FROM requests WHERE at_ms < ?1 AND rowid <= ?2)",
                params![before_ms, upto],
            )?;
            total += tx.execute(
                "DELETE FROM requests WHERE at_ms < ?1 AND rowid <= ?2",
                params![before_ms, upto],
            )?;
            tx.commit()?;
        }
    }
}

/// A rollup from a row whose first nine columns are its counts and histograms.
fn read_rollup(r: &rusqlite::Row) -> rusqlite::Result<crate::analytics::Rollup> {
    let hist = |i: usize| -> rusqlite::Result<crate::analytics::Histogram> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(crate::analytics::Rollup {
        requests: r.get::<_, i64>(0)? as u64,
        succeeded: r.get::<_, i64>(1)? as u64,
        failed: r.get::<_, i64>(2)? as u64,
        cancelled: r.get::<_, i64>(3)? as u64,
        tokens_in: r.get::<_, i64>(4)? as u64,
        tokens_out: r.get::<_, i64>(5)? as u64,
        failed_attempts: r.get::<_, i64>(6)? as u64,
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

    #[test]
    fn migrations_apply_and_settings_round_trip() {
        let s = Store::memory().unwrap();
        assert_eq!(s.setting("x").unwrap(), None);
        s.set_setting("x", b"1").unwrap();
        s.set_setting("x", b"2").unwrap();
        assert_eq!(s.setting("x").unwrap().as_deref(), Some(&b"2"[..]));
    }

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

    #[test]
    fn request_log_round_trip_and_prune() {
        let s = Store::memory().unwrap();
        let row = RequestRow {
            id: "r1".into(),
            at_ms: 1000,
            client: "default".into(),
            requested_model: "auto".into(),
            served_by: Some("groq/x".into()),
            status: 200,
            attempts: vec![
                AttemptRow {
                    target: "a/b".into(),
                    outcome: "429".into(),
                    ..Default::default()
                },
                AttemptRow {
                    target: "groq/x".into(),
                    outcome: "ok".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        s.insert_requests(std::slice::from_ref(&row)).unwrap();
        let got = s.recent_requests(10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempts.len(), 2);
        assert_eq!(got[0].attempts[1].outcome, "ok");
        assert_eq!(s.prune_requests(2000, 1).unwrap(), 1);
        assert_eq!(s.count_requests().unwrap(), 0);
    }

    #[test]
    fn pruning_the_log_prunes_its_hourly_rollups() {
        const HOUR: i64 = 3_600_000;
        let s = Store::memory().unwrap();
        let at = |id: &str, at_ms: i64| RequestRow {
            id: id.into(),
            at_ms,
            served_by: Some("groq/x".into()),
            status: 200,
            ..Default::default()
        };
        s.insert_requests(&[
            at("old", 10),
            at("mid", HOUR + 10),
            at("new", 2 * HOUR + 10),
        ])
        .unwrap();
        let hours = |s: &Store| -> Vec<i64> {
            s.rollups(0)
                .unwrap()
                .into_iter()
                .map(|((h, _, _, _), _)| h)
                .collect()
        };
        assert_eq!(hours(&s), vec![0, HOUR, 2 * HOUR]);
        // The cut falls inside the second hour: its requests before the cut go, and the hour
        // wholly before the cut loses its rollup; the hour the cut falls in keeps its own.
        assert_eq!(s.prune_requests(HOUR + 20, 1).unwrap(), 2);
        assert_eq!(hours(&s), vec![HOUR, 2 * HOUR]);
        assert_eq!(s.prune_requests(3 * HOUR, 1000).unwrap(), 1);
        assert!(hours(&s).is_empty());
        assert_eq!(s.count_requests().unwrap(), 0);
    }
}
