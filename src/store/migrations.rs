//! Schema migrations, applied in order: SQLite's tracked with `PRAGMA user_version`,
//! PostgreSQL's (a list of their own, begun at SQLite's eleventh step) in the `schema_version`
//! table, under an advisory lock so that replicas starting at once migrate once.
//!
//! Append new steps (to both lists when both engines need them); never edit a step that has
//! shipped.

use rusqlite::Connection;

/// The first schema, on its own so tests can build a database as an old release left it.
#[cfg(test)]
pub const FIRST_STEP: &str = STEPS[0];

const STEPS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );
    CREATE TABLE provider_keys (
        id            TEXT PRIMARY KEY,
        provider      TEXT NOT NULL,
        label         TEXT NOT NULL DEFAULT '',
        sealed        BLOB NOT NULL,
        enabled       INTEGER NOT NULL DEFAULT 1,
        status        TEXT NOT NULL DEFAULT 'unknown',
        invalid_count INTEGER NOT NULL DEFAULT 0,
        last_check_ms INTEGER,
        last_error    TEXT,
        base_url      TEXT,
        created_ms    INTEGER NOT NULL
    );
    CREATE TABLE client_keys (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        hash       BLOB NOT NULL UNIQUE,
        prefix     TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    CREATE TABLE chain (
        position INTEGER PRIMARY KEY,
        model    TEXT NOT NULL UNIQUE,
        enabled  INTEGER NOT NULL
    );
    CREATE TABLE ledger (
        scope      TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE cooldowns (
        scope    TEXT PRIMARY KEY,
        until_ms INTEGER NOT NULL,
        reason   TEXT NOT NULL
    );
    CREATE TABLE requests (
        id              TEXT PRIMARY KEY,
        at_ms           INTEGER NOT NULL,
        client          TEXT NOT NULL,
        requested_model TEXT NOT NULL,
        served_by       TEXT,
        status          INTEGER NOT NULL,
        latency_ms      INTEGER NOT NULL,
        ttft_ms         INTEGER,
        tokens_in       INTEGER NOT NULL,
        tokens_out      INTEGER NOT NULL,
        stream          INTEGER NOT NULL,
        error           TEXT
    );
    CREATE INDEX requests_at ON requests (at_ms);
    CREATE TABLE attempts (
        request_id TEXT NOT NULL,
        n          INTEGER NOT NULL,
        target     TEXT NOT NULL,
        key_id     TEXT,
        outcome    TEXT NOT NULL,
        status     INTEGER,
        latency_ms INTEGER NOT NULL,
        PRIMARY KEY (request_id, n)
    );",
    // 2: a request's attempts as JSON in its own row: one insert per request instead of
    // 1 + attempts. The attempts table stays readable for rows written before.
    "ALTER TABLE requests ADD COLUMN attempts TEXT;",
    // 3: requests keyed by an append-only integer. A random text primary key made every insert
    // land on a random B-tree page, so each batch dirtied many pages (measured in bench/).
    "CREATE TABLE requests_v3 (
        seq             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL,
        at_ms           INTEGER NOT NULL,
        client          TEXT NOT NULL,
        requested_model TEXT NOT NULL,
        served_by       TEXT,
        status          INTEGER NOT NULL,
        latency_ms      INTEGER NOT NULL,
        ttft_ms         INTEGER,
        tokens_in       INTEGER NOT NULL,
        tokens_out      INTEGER NOT NULL,
        stream          INTEGER NOT NULL,
        error           TEXT,
        attempts        TEXT
    );
    INSERT INTO requests_v3 (id, at_ms, client, requested_model, served_by, status, latency_ms,
            ttft_ms, tokens_in, tokens_out, stream, error, attempts)
        SELECT id, at_ms, client, requested_model, served_by, status, latency_ms, ttft_ms,
            tokens_in, tokens_out, stream, error, attempts
        FROM requests ORDER BY at_ms, rowid;
    DROP TABLE requests;
    ALTER TABLE requests_v3 RENAME TO requests;
    CREATE INDEX requests_at ON requests (at_ms);",
    // 4: admin sessions (hashed tokens), and when each client key was last used.
    "CREATE TABLE sessions (
        hash       BLOB PRIMARY KEY,
        csrf       TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        seen_ms    INTEGER NOT NULL
    );
    ALTER TABLE client_keys ADD COLUMN last_used_ms INTEGER;",
    // 5: hourly rollups of the request log, kept as requests are logged (analytics), and the
    // surface each request came in on.
    "CREATE TABLE rollups (
        hour            INTEGER NOT NULL,
        provider        TEXT NOT NULL,
        model           TEXT NOT NULL,
        requests        INTEGER NOT NULL,
        succeeded       INTEGER NOT NULL,
        failed          INTEGER NOT NULL,
        cancelled       INTEGER NOT NULL,
        tokens_in       INTEGER NOT NULL,
        tokens_out      INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        latency         TEXT NOT NULL,
        ttft            TEXT NOT NULL,
        PRIMARY KEY (hour, provider, model)
    );
    ALTER TABLE requests ADD COLUMN surface TEXT;",
    // 6: what a surface could not pass on (dropped server tools, ...).
    "ALTER TABLE requests ADD COLUMN notes TEXT;",
    // 7: models a provider retired (410, "decommissioned"), until the user enables them again.
    "CREATE TABLE retired (
        model  TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at_ms  INTEGER NOT NULL
    );",
    // 8: what upstreams taught about models (SPEC 3.9): fields they refuse, capabilities lost.
    "CREATE TABLE lessons (
        model  TEXT NOT NULL,
        kind   TEXT NOT NULL,
        field  TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms  INTEGER NOT NULL,
        PRIMARY KEY (model, kind, field)
    );",
    // 9: a client key's limits, allowed models, expiry and weight (SPEC 3.8), as JSON.
    "ALTER TABLE client_keys ADD COLUMN limits TEXT;",
    // 10: hourly rollups per client key too (SPEC 3.8: a client filter and a per-client table);
    // rows from before count as client "".
    "CREATE TABLE rollups_v10 (
        hour            INTEGER NOT NULL,
        provider        TEXT NOT NULL,
        model           TEXT NOT NULL,
        client          TEXT NOT NULL,
        requests        INTEGER NOT NULL,
        succeeded       INTEGER NOT NULL,
        failed          INTEGER NOT NULL,
        cancelled       INTEGER NOT NULL,
        tokens_in       INTEGER NOT NULL,
        tokens_out      INTEGER NOT NULL,
        failed_attempts INTEGER NOT NULL,
        latency         TEXT NOT NULL,
        ttft            TEXT NOT NULL,
        PRIMARY KEY (hour, provider, model, client)
    );
    INSERT INTO rollups_v10 SELECT hour, provider, model, '', requests, succeeded, failed,
        cancelled, tokens_in, tokens_out, failed_attempts, latency, ttft FROM rollups;
    DROP TABLE rollups;
    ALTER TABLE rollups_v10 RENAME TO rollups;",
    // 11: answers kept for Idempotency-Key retries (SPEC 2.8), 24 hours.
    "CREATE TABLE idempotency (
        client      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        status      INTEGER NOT NULL,
        headers     TEXT NOT NULL,
        body        BLOB NOT NULL,
        at_ms       INTEGER NOT NULL,
        PRIMARY KEY (client, key)
    );
    CREATE INDEX idempotency_at ON idempotency (at_ms);",
];

/// Bring the schema up to date.
pub fn apply(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version as usize > STEPS.len() {
        anyhow::bail!(
            "the database was written by a newer Freeway (schema {version}, this build knows {}); upgrade Freeway",
            STEPS.len()
        );
    }
    for (i, step) in STEPS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// PostgreSQL's steps. The first is SQLite's schema after its step 11, in PostgreSQL's types
/// (BYTEA, BIGINT, BOOLEAN, an identity `seq`), plus the change counter replicas poll
/// (`Store::data_version`) and the triggers that bump it.
const PG_STEPS: &[&str] = &[
    // 1: the schema of SQLite's step 11, and the change counter.
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
    CREATE TABLE provider_keys (
        id            TEXT PRIMARY KEY,
        provider      TEXT NOT NULL,
        label         TEXT NOT NULL DEFAULT '',
        sealed        BYTEA NOT NULL,
        enabled       BOOLEAN NOT NULL DEFAULT TRUE,
        status        TEXT NOT NULL DEFAULT 'unknown',
        invalid_count BIGINT NOT NULL DEFAULT 0,
        last_check_ms BIGINT,
        last_error    TEXT,
        base_url      TEXT,
        created_ms    BIGINT NOT NULL
    );
    CREATE TABLE client_keys (
        id           TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        hash         BYTEA NOT NULL UNIQUE,
        prefix       TEXT NOT NULL,
        created_ms   BIGINT NOT NULL,
        revoked_ms   BIGINT,
        last_used_ms BIGINT,
        limits       TEXT
    );
    CREATE TABLE chain (
        position BIGINT PRIMARY KEY,
        model    TEXT NOT NULL UNIQUE,
        enabled  BOOLEAN NOT NULL
    );
    CREATE TABLE ledger (
        scope      TEXT PRIMARY KEY,
        state      TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    );
    CREATE TABLE cooldowns (
        scope    TEXT PRIMARY KEY,
        until_ms BIGINT NOT NULL,
        reason   TEXT NOT NULL
    );
    CREATE TABLE requests (
        seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id              TEXT NOT NULL,
        at_ms           BIGINT NOT NULL,
        client          TEXT NOT NULL,
        requested_model TEXT NOT NULL,
        served_by       TEXT,
        status          BIGINT NOT NULL,
        latency_ms      BIGINT NOT NULL,
        ttft_ms         BIGINT,
        tokens_in       BIGINT NOT NULL,
        tokens_out      BIGINT NOT NULL,
        stream          BOOLEAN NOT NULL,
        error           TEXT,
        attempts        TEXT,
        surface         TEXT,
        notes           TEXT
    );
    CREATE INDEX requests_at ON requests (at_ms);
    CREATE INDEX requests_id ON requests (id);
    CREATE TABLE attempts (
        request_id TEXT NOT NULL,
        n          BIGINT NOT NULL,
        target     TEXT NOT NULL,
        key_id     TEXT,
        outcome    TEXT NOT NULL,
        status     BIGINT,
        latency_ms BIGINT NOT NULL,
        PRIMARY KEY (request_id, n)
    );
    CREATE TABLE sessions (
        hash       BYTEA PRIMARY KEY,
        csrf       TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        seen_ms    BIGINT NOT NULL
    );
    CREATE TABLE rollups (
        hour            BIGINT NOT NULL,
        provider        TEXT NOT NULL,
        model           TEXT NOT NULL,
        client          TEXT NOT NULL,
        requests        BIGINT NOT NULL,
        succeeded       BIGINT NOT NULL,
        failed          BIGINT NOT NULL,
        cancelled       BIGINT NOT NULL,
        tokens_in       BIGINT NOT NULL,
        tokens_out      BIGINT NOT NULL,
        failed_attempts BIGINT NOT NULL,
        latency         TEXT NOT NULL,
        ttft            TEXT NOT NULL,
        PRIMARY KEY (hour, provider, model, client)
    );
    CREATE TABLE retired (
        model  TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at_ms  BIGINT NOT NULL
    );
    CREATE TABLE lessons (
        model  TEXT NOT NULL,
        kind   TEXT NOT NULL,
        field  TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms  BIGINT NOT NULL,
        PRIMARY KEY (model, kind, field)
    );
    CREATE TABLE idempotency (
        client      TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint BYTEA NOT NULL,
        status      BIGINT NOT NULL,
        headers     TEXT NOT NULL,
        body        BYTEA NOT NULL,
        at_ms       BIGINT NOT NULL,
        PRIMARY KEY (client, key)
    );
    CREATE INDEX idempotency_at ON idempotency (at_ms);

    -- What replicas must reload changed: bumped in the writing transaction, so a replica that
    -- sees the new number sees the rows too.
    CREATE TABLE changes (n BIGINT NOT NULL);
    INSERT INTO changes (n) VALUES (0);
    CREATE FUNCTION freeway_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE changes SET n = n + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER provider_keys_added AFTER INSERT OR DELETE ON provider_keys
        FOR EACH STATEMENT EXECUTE FUNCTION freeway_changed();
    -- Not every health check: a key's error/ok flips would reload every replica each time.
    CREATE TRIGGER provider_keys_changed AFTER UPDATE ON provider_keys FOR EACH ROW
        WHEN ((OLD.provider, OLD.label, OLD.sealed, OLD.enabled, OLD.base_url)
              IS DISTINCT FROM (NEW.provider, NEW.label, NEW.sealed, NEW.enabled, NEW.base_url)
              OR ((OLD.status = 'invalid') IS DISTINCT FROM (NEW.status = 'invalid')))
        EXECUTE FUNCTION freeway_changed();
    CREATE TRIGGER chain_changed AFTER INSERT OR UPDATE OR DELETE ON chain
        FOR EACH STATEMENT EXECUTE FUNCTION freeway_changed();
    CREATE TRIGGER retired_changed AFTER INSERT OR UPDATE OR DELETE ON retired
        FOR EACH STATEMENT EXECUTE FUNCTION freeway_changed();
    CREATE TRIGGER lessons_changed AFTER INSERT OR UPDATE OR DELETE ON lessons
        FOR EACH STATEMENT EXECUTE FUNCTION freeway_changed();
    CREATE TRIGGER client_keys_added AFTER INSERT OR DELETE ON client_keys
        FOR EACH STATEMENT EXECUTE FUNCTION freeway_changed();
    -- Not when only last_used_ms moved: every replica writes that every few seconds.
    CREATE TRIGGER client_keys_changed AFTER UPDATE ON client_keys FOR EACH ROW
        WHEN ((OLD.name, OLD.hash, OLD.prefix, OLD.revoked_ms, OLD.limits)
              IS DISTINCT FROM (NEW.name, NEW.hash, NEW.prefix, NEW.revoked_ms, NEW.limits))
        EXECUTE FUNCTION freeway_changed();
    -- Not the ledger's save point: every replica writes it every few seconds.
    CREATE TRIGGER settings_written AFTER INSERT OR UPDATE ON settings FOR EACH ROW
        WHEN (NEW.key <> 'ledger_seq') EXECUTE FUNCTION freeway_changed();
    CREATE TRIGGER settings_deleted AFTER DELETE ON settings FOR EACH ROW
        WHEN (OLD.key <> 'ledger_seq') EXECUTE FUNCTION freeway_changed();",
];

/// Any number, the same in every replica: the advisory lock that orders their migrations.
const PG_MIGRATION_LOCK: i64 = 7_046_023_984;

/// Bring a PostgreSQL schema up to date, in one transaction under an advisory lock: replicas
/// that start at once wait for the first, then find nothing left to do.
pub fn apply_pg(client: &mut postgres::Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version)
             SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )?;
    let version: i64 = tx
        .query_one("SELECT MAX(version) FROM schema_version", &[])?
        .get(0);
    if version as usize > PG_STEPS.len() {
        anyhow::bail!(
            "the database was written by a newer Freeway (schema {version}, this build knows {}); upgrade Freeway",
            PG_STEPS.len()
        );
    }
    let mut applied = version;
    for step in PG_STEPS.iter().skip(version as usize) {
        tx.batch_execute(step)?;
        applied += 1;
    }
    if applied != version {
        tx.execute("UPDATE schema_version SET version = $1", &[&applied])?;
        tracing::info!(
            from = version,
            to = applied,
            "migrated the PostgreSQL store"
        );
    }
    tx.commit()?;
    Ok(())
}
