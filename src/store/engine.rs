//! The two engines under [`super::Store`]: SQLite in a file under `data_dir` (the default) and
//! PostgreSQL (`[store] url`, for several replicas). Each store method writes its SQL once, with
//! `?N` placeholders and the syntax both engines accept; this module binds [`Param`]s, reads
//! columns ([`Row::get`]) and turns `?N` into PostgreSQL's `$N`.
//!
//! PostgreSQL is reached with the synchronous `postgres` client from a small pool. That client
//! drives a runtime of its own, which tokio forbids inside an async context: store calls run on
//! the blocking pool (`offload::run`) or the request-log thread, where that is allowed; a call
//! made from inside a runtime (the CLI's `block_on`) hops to a scoped thread of its own.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;

/// A value bound to a statement, the same for both engines.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Bool(bool),
    Null,
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl From<bool> for Param<'_> {
    fn from(v: bool) -> Self {
        Param::Bool(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Param<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Param::Bytes(v)
    }
}
impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match *self {
            Param::Int(v) => ToSqlOutput::Owned(Value::Integer(v)),
            Param::Bool(v) => ToSqlOutput::Owned(Value::Integer(v.into())),
            Param::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Param::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Param::Null => ToSqlOutput::Owned(Value::Null),
        })
    }
}

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        match *self {
            // The server infers a parameter's type from where it stands; every integer column
            // is BIGINT, but an expression may ask for a narrower one.
            Param::Int(v) => match *ty {
                Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
                Type::BOOL => (v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Param::Bool(v) => v.to_sql(ty, out),
            // PostgreSQL refuses a zero byte in text (SQLite keeps it): a client's model name
            // or an upstream's error text may carry one.
            Param::Text(s) if s.contains('\0') => s.replace('\0', "\u{fffd}").to_sql(ty, out),
            Param::Text(s) => s.to_sql(ty, out),
            Param::Bytes(b) => b.to_sql(ty, out),
            Param::Null => Ok(postgres::types::IsNull::Yes),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A column type both engines can read.
pub trait Col: Sized {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error>;
}

macro_rules! col {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
                r.get(i)
            }
            fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
                r.try_get(i)
            }
        }
    )*};
}
col!(String, Option<String>, Vec<u8>, bool);

impl Col for Option<i64> {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        // BIGINT everywhere in the schema; an aggregate may still come back narrower.
        r.try_get::<_, Option<i64>>(i)
            .or_else(|_| Ok(r.try_get::<_, Option<i32>>(i)?.map(i64::from)))
    }
}

impl Col for i64 {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        r.try_get::<_, i64>(i)
            .or_else(|_| Ok(i64::from(r.try_get::<_, i32>(i)?)))
    }
}

/// One result row of either engine.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `i` (0-based).
    pub fn get<T: Col>(&self, i: usize) -> anyhow::Result<T> {
        Ok(match self {
            Row::Sqlite(r) => T::lite(r, i)?,
            Row::Pg(r) => T::pg(r, i)?,
        })
    }
}

/// A connection of either engine, inside a store call.
pub enum Db<'a, 'c> {
    Sqlite(&'a rusqlite::Connection),
    Pg {
        tx: &'a mut postgres::Transaction<'c>,
        /// Statements this connection prepared, by their SQL as written.
        cache: &'a mut HashMap<&'static str, postgres::Statement>,
    },
}

impl Db<'_, '_> {
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg { .. })
    }

    /// Run a statement; how many rows it changed.
    pub fn exec(&mut self, sql: &'static str, params: &[Param]) -> anyhow::Result<usize> {
        match self {
            Db::Sqlite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Db::Pg { tx, cache } => {
                let stmt = prepare(tx, cache, sql)?;
                Ok(tx.execute(&stmt, &pg_params(params))? as usize)
            }
        }
    }

    /// Every row of a query, each read by `f`.
    pub fn query<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        mut f: impl FnMut(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<Vec<T>> {
        let mut out = Vec::new();
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Sqlite(r))?);
                }
            }
            Db::Pg { tx, cache } => {
                let stmt = prepare(tx, cache, sql)?;
                for r in tx.query(&stmt, &pg_params(params))? {
                    out.push(f(&Row::Pg(&r))?);
                }
            }
        }
        Ok(out)
    }

    /// The first row of a query, if any.
    pub fn row<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        f: impl FnMut(&Row) -> anyhow::Result<T>,
    ) -> anyhow::Result<Option<T>> {
        Ok(self.query(sql, params, f)?.into_iter().next())
    }
}

fn pg_params<'p>(params: &'p [Param]) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn prepare(
    tx: &mut postgres::Transaction<'_>,
    cache: &mut HashMap<&'static str, postgres::Statement>,
    sql: &'static str,
) -> anyhow::Result<postgres::Statement> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let stmt = tx.prepare(&dollar_placeholders(sql))?;
    cache.insert(sql, stmt.clone());
    Ok(stmt)
}

/// `?N` (SQLite) as `$N` (PostgreSQL). The store's SQL has no `?` inside string literals.
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The store cannot be reached (PostgreSQL down, the network gone): the admin side answers 503
/// and the request log keeps its rows to write them later. The message never holds a password.
#[derive(Debug, thiserror::Error)]
#[error("the store cannot be reached ({target}): {reason}")]
pub struct Unavailable {
    /// The server and database, without credentials.
    pub target: String,
    pub reason: String,
}

/// Whether `e` says the store could not be reached.
pub fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unavailable>())
}

/// Whether a PostgreSQL error is about the connection rather than the statement.
fn connection_error(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        // Class 08: connection exception; 57P01..57P03: the server shuts down or starts. Also
        // what passes if tried again: a deadlock or serialization failure (40P01, 40001), a
        // lock or statement that timed out (55P03, 57014), a read-only server after a
        // failover (25006). The request log keeps its batch for the next try.
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "40P01" | "40001" | "55P03" | "57014" | "25006"
                )
        }
        None => true,
    }
}

/// PostgreSQL connections to reuse, at most [`IDLE`] kept.
pub struct Pool {
    config: postgres::Config,
    /// `host:port/db`, for messages (never the password).
    pub target: String,
    idle: Mutex<Vec<Conn>>,
}

impl Drop for Pool {
    /// Closing a sync PostgreSQL client runs a small runtime of its own, which may not happen
    /// on an async worker (the last handle to the store can go with a task): close them on a
    /// plain thread then.
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        if idle.is_empty() {
            return;
        }
        if must_hop() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// Connections kept open between calls (more may be open while calls run at once).
const IDLE: usize = 4;

struct Conn {
    client: postgres::Client,
    stmts: HashMap<&'static str, postgres::Statement>,
}

impl Pool {
    /// A pool for `url` (`postgres://user:password@host:port/db?…`); nothing is connected yet.
    pub fn new(url: &str) -> anyhow::Result<Pool> {
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            anyhow::anyhow!("the store url {} is not a PostgreSQL url: {e}", redact(url))
        })?;
        if config.get_connect_timeout().is_none() {
            // A store that does not answer is told apart quickly from a slow one.
            config.connect_timeout(std::time::Duration::from_secs(3));
        }
        config.application_name("freeway");
        // A database host that stops answering (packets dropped, not refused) is noticed in
        // seconds rather than when TCP gives up, and no statement or lock waits for long:
        // every store call holds one of the few blocking threads; a replica that vanished in
        // the middle of a transaction lets go of its locks within a minute.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_options().is_none() {
            config.options(
                "-c statement_timeout=30000 -c lock_timeout=10000 \
                 -c idle_in_transaction_session_timeout=60000",
            );
        }
        Ok(Pool {
            target: describe(&config),
            config,
            idle: Mutex::new(Vec::new()),
        })
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> anyhow::Error {
        Unavailable {
            target: self.target.clone(),
            reason: reason.to_string(),
        }
        .into()
    }

    /// A connection: an idle one (`true`) or a new one.
    fn take(&self) -> anyhow::Result<(Conn, bool)> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match idle {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => return Ok((c, true)),
                None => break,
            }
        }
        let client = self
            .config
            .connect(postgres::NoTls)
            .map_err(|e| self.unavailable(e))?;
        Ok((
            Conn {
                client,
                stmts: HashMap::new(),
            },
            false,
        ))
    }

    /// Forget every idle connection (the server restarted: they are all dead).
    fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn give_back(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }

    /// Run `f` in one transaction on a pooled connection (committed when `f` succeeds). A
    /// connection that failed is dropped, and its error becomes [`Unavailable`].
    pub fn tx<R: Send>(
        &self,
        f: impl FnOnce(&mut Db) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        if must_hop() {
            return std::thread::scope(|s| {
                s.spawn(|| self.tx_here(f))
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a store call panicked")))
            });
        }
        self.tx_here(f)
    }

    fn tx_here<R>(&self, f: impl FnOnce(&mut Db) -> anyhow::Result<R>) -> anyhow::Result<R> {
        let mut f = Some(f);
        loop {
            let (mut conn, reused) = self.take()?;
            let Conn { client, stmts } = &mut conn;
            let mut tx = match client.transaction() {
                Ok(tx) => tx,
                // An idle connection the server closed meanwhile (it restarted): nothing ran
                // yet, so a new connection may try.
                Err(e) if reused && connection_error(&e) => {
                    self.drop_idle();
                    continue;
                }
                Err(e) => return Err(self.unavailable(e)),
            };
            let Some(f) = f.take() else {
                return Err(anyhow::anyhow!("a store call ran twice"));
            };
            let result = f(&mut Db::Pg {
                tx: &mut tx,
                cache: stmts,
            })
            .and_then(|out| Ok(tx.commit().map(|()| out)?));
            return match result {
                Ok(out) => {
                    self.give_back(conn);
                    Ok(out)
                }
                Err(e) => {
                    let lost = conn.client.is_closed()
                        || e.chain()
                            .filter_map(|c| c.downcast_ref::<postgres::Error>())
                            .any(connection_error);
                    if lost {
                        self.drop_idle();
                        Err(self.unavailable(format!("{e:#}")))
                    } else {
                        // A failed statement leaves the connection usable (the transaction
                        // was rolled back when dropped).
                        self.give_back(conn);
                        Err(e)
                    }
                }
            };
        }
    }

    /// Run `f` on a connection of its own (the migrations).
    pub fn with_client<R: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<R> + Send,
    ) -> anyhow::Result<R> {
        let run = || {
            let (mut conn, _) = self.take()?;
            let out = f(&mut conn.client);
            // Statements prepared before a schema change would be stale.
            conn.stmts.clear();
            self.give_back(conn);
            out
        };
        if must_hop() {
            return std::thread::scope(|s| {
                s.spawn(run)
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a store call panicked")))
            });
        }
        run()
    }
}

/// Whether a call here must move to a thread of its own: inside a runtime (the CLI's
/// `block_on`, an async test) the synchronous client may not block, except on the blocking
/// pool's threads (`offload::run`), where the server's calls run.
fn must_hop() -> bool {
    tokio::runtime::Handle::try_current().is_ok() && !crate::offload::on_pool_thread()
}

/// `host:port/db` of a PostgreSQL config: what logs and errors show.
fn describe(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("postgresql {host}:{port}/{db}")
}

/// `url` with its password (if any) replaced, for messages.
pub fn redact(url: &str) -> String {
    // postgres://user:password@host/... : the password sits between the first ':' after the
    // scheme and the last '@' of the authority.
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return if url.contains("password") {
            "[a connection string with a password]".into()
        } else {
            url.to_string()
        };
    };
    let rest = &url[scheme_end..];
    // The credentials run to the last '@' (a password may hold '/'), the host to the next '/'.
    let query = rest.find('?').unwrap_or(rest.len());
    let after_at = rest[..query].rfind('@').map_or(0, |at| at + 1);
    let authority_end = after_at
        + rest[after_at..]
            .find(['/', '?'])
            .unwrap_or(rest.len() - after_at);
    let authority = &rest[..authority_end];
    let mut out = url[..scheme_end].to_string();
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    // A password may also ride in the query string.
    match tail.find("password=") {
        Some(p) => {
            out.push_str(&tail[..p]);
            out.push_str("password=***");
            if let Some(amp) = tail[p..].find('&') {
                out.push_str(&tail[p + amp..]);
            }
        }
        None => out.push_str(tail),
    }
    out
}

/// Open a SQLite file with the pragmas the store relies on.
pub fn sqlite_init(conn: &rusqlite::Connection) -> anyhow::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .context("cannot set up the database")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            dollar_placeholders("a = ?1 AND b = ?12 OR c = '?'"),
            "a = $1 AND b = $12 OR c = '?'"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://fw:s3cr%40t@db.example:5432/freeway?sslmode=disable"),
            "postgres://fw:***@db.example:5432/freeway?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://fw@h/db?password=x&a=b"),
            "postgres://fw@h/db?password=***&a=b"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        // A password holding '/' still ends at the last '@'.
        let r = redact("postgres://fw:pa/ss@h:badport/db");
        assert!(!r.contains("pa/ss") && !r.contains("ss@"), "{r}");
        assert!(r.ends_with("@h:badport/db"), "{r}");
        assert!(!redact("host=h password=x").contains('x'));
        let p = Pool::new("postgres://fw:hunter2@127.0.0.1:1/freeway").unwrap();
        assert_eq!(p.target, "postgresql 127.0.0.1:1/freeway");
        assert!(
            !format!(
                "{:#}",
                Pool::new("postgres://fw:hunter2@h:notaport/x")
                    .err()
                    .unwrap()
            )
            .contains("hunter2")
        );
    }
}
