//! The store on both engines (SPEC 5, 5.1): one suite of every `Store` method, run against
//! SQLite and against a throwaway PostgreSQL; then what only PostgreSQL has (concurrent
//! migrations, the change counter replicas poll, the store going away and coming back).

use freeway::lessons::Lesson;
use freeway::record::{AttemptRow, Kept, RequestRow};
use freeway::store::{ChainRow, ClientKeyRow, KeyRow, SessionRow, Store};

use crate::servers::Postgres;

/// Each test of the suite, once per engine.
macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(&freeway::store::Store::memory().unwrap());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let pg = crate::servers::Postgres::start();
                    let store = freeway::store::Store::connect(&pg.database()).unwrap();
                    super::$name(&store);
                }
            )*
        }
    };
}

both_engines!(
    settings,
    provider_keys,
    client_keys_with_limits,
    sessions,
    chain_retired_and_lessons,
    idempotency,
    ledger_save_and_load,
    request_log_round_trip_and_paging,
    pruning_the_log_prunes_its_hourly_rollups,
    a_zero_byte_from_a_client_is_logged_not_refused,
);

/// A client's model name may hold a zero byte (valid JSON); PostgreSQL refuses one in text,
/// and one such row must not cost the batch it is written with.
fn a_zero_byte_from_a_client_is_logged_not_refused(s: &Store) {
    let row = |id: &str, model: &str| RequestRow {
        id: id.into(),
        at_ms: 1_000,
        requested_model: model.into(),
        status: 400,
        ..Default::default()
    };
    s.insert_requests(&[row("plain", "auto"), row("odd", "x\u{0}y")])
        .unwrap();
    let rows = s.recent_requests(10).unwrap();
    assert_eq!(rows.len(), 2);
    let odd = rows.iter().find(|r| r.id == "odd").unwrap();
    assert!(odd.requested_model.starts_with('x') && odd.requested_model.ends_with('y'));
}

fn key(id: &str, provider: &str, created_ms: i64) -> KeyRow {
    KeyRow {
        id: id.into(),
        provider: provider.into(),
        label: format!("label {id}"),
        sealed: vec![0, 1, 2, 255],
        enabled: true,
        status: "unknown".into(),
        invalid_count: 0,
        last_check_ms: None,
        last_error: None,
        base_url: None,
        created_ms,
    }
}

fn client_key(id: &str, name: &str, fill: u8) -> ClientKeyRow {
    ClientKeyRow {
        id: id.into(),
        name: name.into(),
        hash: [fill; 32],
        prefix: "fw-abc".into(),
        created_ms: i64::from(fill),
        revoked_ms: None,
        last_used_ms: None,
        limits: None,
    }
}

fn settings(s: &Store) {
    assert_eq!(s.setting("x").unwrap(), None);
    s.set_setting("x", b"1").unwrap();
    s.set_setting("x", b"2").unwrap();
    assert_eq!(s.setting("x").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(s.set_setting_once("x", b"3").unwrap(), b"2");
    assert_eq!(s.set_setting_once("y", b"\0\xff").unwrap(), b"\0\xff");
    s.delete_setting("x").unwrap();
    assert_eq!(s.setting("x").unwrap(), None);
}

fn provider_keys(s: &Store) {
    s.insert_key(&key("k2", "groq", 2)).unwrap();
    s.insert_key(&key("k1", "groq", 1)).unwrap();
    s.insert_key(&key("a1", "cerebras", 5)).unwrap();
    assert!(
        s.insert_key(&key("k1", "groq", 1)).is_err(),
        "ids are unique"
    );
    let ids = |s: &Store| {
        s.keys()
            .unwrap()
            .into_iter()
            .map(|k| k.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(s), ["a1", "k1", "k2"], "by provider, then age");
    assert_eq!(s.find_keys("k").unwrap().len(), 2);
    let k = &s.find_keys("k1").unwrap()[0];
    assert_eq!(
        (k.sealed.as_slice(), k.enabled),
        (&[0u8, 1, 2, 255][..], true)
    );

    s.set_key_health("k1", "invalid", 3, Some("401 from upstream"), 77, true)
        .unwrap();
    let k = &s.find_keys("k1").unwrap()[0];
    assert_eq!(
        (
            k.status.as_str(),
            k.invalid_count,
            k.last_error.as_deref(),
            k.last_check_ms,
            k.enabled
        ),
        ("invalid", 3, Some("401 from upstream"), Some(77), false)
    );
    s.set_key_health("k2", "ok", 0, None, 78, false).unwrap();
    assert!(
        s.find_keys("k2").unwrap()[0].enabled,
        "health alone keeps it on"
    );
    assert!(s.set_key_enabled("k1", true).unwrap());
    let k = &s.find_keys("k1").unwrap()[0];
    assert_eq!(
        (k.status.as_str(), k.invalid_count, k.enabled),
        ("unknown", 0, true)
    );
    assert!(s.set_key_enabled("k1", false).unwrap());
    assert!(!s.find_keys("k1").unwrap()[0].enabled);
    assert!(!s.set_key_enabled("nope", true).unwrap());

    assert!(s.set_key_label("k2", "work").unwrap());
    assert!(!s.set_key_label("nope", "x").unwrap());
    s.set_key_base_url("k2", "https://alt.example/v1").unwrap();
    let k = &s.find_keys("k2").unwrap()[0];
    assert_eq!(
        (k.label.as_str(), k.base_url.as_deref()),
        ("work", Some("https://alt.example/v1"))
    );
    assert!(s.remove_key("k2").unwrap());
    assert!(!s.remove_key("k2").unwrap());
    assert_eq!(ids(s), ["a1", "k1"]);
}

fn client_keys_with_limits(s: &Store) {
    s.insert_client_key(&client_key("c1", "alice", 1)).unwrap();
    let mut bob = client_key("c2", "bob", 2);
    bob.limits = Some(r#"{"rpm":5}"#.into());
    s.insert_client_key(&bob).unwrap();
    assert!(
        s.insert_client_key(&client_key("c3", "eve", 1)).is_err(),
        "hashes are unique"
    );
    let rows = s.client_keys().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].hash, rows[1].limits.as_deref()),
        ([1; 32], Some(r#"{"rpm":5}"#))
    );

    assert_eq!(
        s.set_client_limits("alice", Some(r#"{"rpd":9}"#)).unwrap(),
        1
    );
    assert_eq!(s.set_client_limits("bob", None).unwrap(), 1);
    assert_eq!(s.set_client_limits("nobody", None).unwrap(), 0);
    s.touch_client_keys(&[("c1".into(), 50), ("c2".into(), 60)])
        .unwrap();
    s.touch_client_keys(&[("c1".into(), 40)]).unwrap();
    let rows = s.client_keys().unwrap();
    assert_eq!(
        (rows[0].limits.as_deref(), rows[1].limits.as_deref()),
        (Some(r#"{"rpd":9}"#), None)
    );
    assert_eq!(
        (rows[0].last_used_ms, rows[1].last_used_ms),
        (Some(50), Some(60)),
        "last use never goes back"
    );

    assert_eq!(s.revoke_client_key("alice", 99).unwrap(), 1);
    assert_eq!(s.revoke_client_key("alice", 100).unwrap(), 0, "once");
    assert_eq!(s.revoke_client_key("c2", 101).unwrap(), 1, "by id too");
    let rows = s.client_keys().unwrap();
    assert_eq!(
        (rows[0].revoked_ms, rows[1].revoked_ms),
        (Some(99), Some(101))
    );
    assert_eq!(
        s.set_client_limits("alice", None).unwrap(),
        0,
        "revoked keys stay"
    );
}

fn sessions(s: &Store) {
    let row = |fill: u8, seen_ms: i64| SessionRow {
        hash: [fill; 32],
        csrf: format!("csrf{fill}"),
        created_ms: 1,
        seen_ms,
    };
    s.insert_session(&row(1, 10)).unwrap();
    s.insert_session(&row(2, 20)).unwrap();
    s.insert_session(&row(3, 30)).unwrap();
    assert_eq!(s.session(&[1; 32]).unwrap(), Some(row(1, 10)));
    assert_eq!(s.session(&[9; 32]).unwrap(), None);
    s.touch_session(&[1; 32], 40).unwrap();
    assert_eq!(s.session(&[1; 32]).unwrap().unwrap().seen_ms, 40);
    // Ending one also drops the idle ones.
    s.end_sessions(Some(&[3; 32]), 25).unwrap();
    assert!(s.session(&[3; 32]).unwrap().is_none());
    assert!(s.session(&[2; 32]).unwrap().is_none(), "idle since 20");
    assert!(s.session(&[1; 32]).unwrap().is_some());
    s.end_sessions(None, i64::MIN).unwrap();
    assert!(s.session(&[1; 32]).unwrap().is_none());
}

fn chain_retired_and_lessons(s: &Store) {
    let row = |m: &str, enabled: bool| ChainRow {
        model: m.into(),
        enabled,
    };
    assert!(s.chain().unwrap().is_empty());
    s.set_chain(&[row("a", true), row("b", false)]).unwrap();
    s.set_chain(&[row("b", true), row("a", false), row("c", true)])
        .unwrap();
    assert_eq!(
        s.chain().unwrap(),
        [row("b", true), row("a", false), row("c", true)]
    );

    s.retire("groq/old", "decommissioned", 5).unwrap();
    s.retire("groq/old", "again", 6).unwrap();
    s.retire("groq/older", "410", 1).unwrap();
    assert_eq!(
        s.retired().unwrap(),
        [
            ("groq/older".to_string(), "410".to_string()),
            ("groq/old".to_string(), "decommissioned".to_string())
        ],
        "oldest first; the first report kept"
    );
    assert!(s.unretire("groq/old").unwrap());
    assert!(!s.unretire("groq/old").unwrap());

    s.learn("m1", &Lesson::Drop("seed".into()), "unknown field seed", 1)
        .unwrap();
    s.learn("m1", &Lesson::Drop("seed".into()), "again", 2)
        .unwrap();
    s.learn("m1", &Lesson::NoTools, "no tools", 3).unwrap();
    s.learn("m2", &Lesson::NoImages, "no images", 4).unwrap();
    let lessons = s.lessons().unwrap();
    assert_eq!(lessons.len(), 3);
    assert_eq!(
        (lessons[0].0.as_str(), &lessons[0].1, lessons[0].2.as_str()),
        ("m1", &Lesson::Drop("seed".into()), "unknown field seed")
    );
    assert_eq!(s.forget_lessons(Some("m1")).unwrap(), 2);
    assert_eq!(s.forget_lessons(None).unwrap(), 1);
    assert!(s.lessons().unwrap().is_empty());
}

fn idempotency(s: &Store) {
    let kept = |body: &[u8], at_ms: i64| Kept {
        fingerprint: vec![7; 32],
        status: 200,
        headers: vec![("x-freeway-served-by".into(), "groq/x".into())],
        body: body.to_vec(),
        at_ms,
    };
    s.keep_idempotent("alice", "k1", &kept(b"one", 10)).unwrap();
    assert_eq!(
        s.idempotent("alice", "k1", 0).unwrap(),
        Some(kept(b"one", 10))
    );
    assert_eq!(s.idempotent("alice", "k1", 11).unwrap(), None, "too old");
    assert_eq!(s.idempotent("bob", "k1", 0).unwrap(), None, "per client");
    s.keep_idempotent("alice", "k1", &kept(b"two", 20)).unwrap();
    s.keep_idempotent("alice", "k2", &kept(b"\0bin\xff", 30))
        .unwrap();
    assert_eq!(
        s.idempotent("alice", "k1", 0).unwrap().unwrap().body,
        b"two"
    );
    assert_eq!(s.prune_idempotent(25).unwrap(), 1);
    assert_eq!(s.idempotent("alice", "k1", 0).unwrap(), None);
    assert_eq!(
        s.idempotent("alice", "k2", 0).unwrap().unwrap().body,
        b"\0bin\xff"
    );
}

fn ledger_save_and_load(s: &Store) {
    assert_eq!(s.ledger_seq().unwrap(), 0);
    let scopes = vec![
        ("groq:k1".to_string(), r#"{"rpm":1}"#.to_string()),
        ("groq:k2".to_string(), "{}".to_string()),
    ];
    let cooldowns = vec![("groq:k1".to_string(), 99, "429".to_string())];
    s.save_ledger(&scopes, &cooldowns, 5, 42).unwrap();
    s.save_ledger(&scopes[..1], &[], 6, 43).unwrap();
    let mut loaded = s.load_ledger().unwrap();
    loaded.sort();
    assert_eq!(loaded, scopes, "scopes not saved again are kept");
    assert!(s.load_cooldowns().unwrap().is_empty(), "cooldowns replaced");
    s.save_ledger(&[], &cooldowns, 7, 44).unwrap();
    assert_eq!(s.load_cooldowns().unwrap(), cooldowns);
    assert_eq!(s.ledger_seq().unwrap(), 44);
}

fn request(id: &str, at_ms: i64) -> RequestRow {
    RequestRow {
        id: id.into(),
        at_ms,
        client: "default".into(),
        requested_model: "auto".into(),
        served_by: Some("groq/x".into()),
        status: 200,
        latency_ms: 120,
        ttft_ms: Some(30),
        tokens_in: 11,
        tokens_out: 22,
        stream: true,
        error: None,
        attempts: vec![
            AttemptRow {
                target: "a/b".into(),
                outcome: "429".into(),
                status: Some(429),
                ..Default::default()
            },
            AttemptRow {
                target: "groq/x".into(),
                key_id: Some("k1".into()),
                outcome: "ok".into(),
                ..Default::default()
            },
        ],
        surface: Some("chat".into()),
        notes: None,
    }
}

fn request_log_round_trip_and_paging(s: &Store) {
    const HOUR: i64 = 3_600_000;
    let mut failed = request("r3", HOUR + 5);
    failed.status = 502;
    failed.served_by = None;
    failed.error = Some("every candidate failed".into());
    failed.stream = false;
    failed.ttft_ms = None;
    s.insert_requests(&[request("r1", 1000), request("r2", 2000)])
        .unwrap();
    s.insert_requests(std::slice::from_ref(&failed)).unwrap();
    assert_eq!(s.count_requests().unwrap(), 3);
    let got = s.recent_requests(10).unwrap();
    assert_eq!(
        got.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["r3", "r2", "r1"]
    );
    assert_eq!(got[0], failed);
    assert_eq!(got[1], request("r2", 2000));
    let page = s.requests_before(Some("r2"), 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "r1");
    assert_eq!(s.requests_before(None, 1).unwrap()[0].id, "r3");
    assert!(s.requests_before(Some("unknown"), 10).unwrap().is_empty());

    // The failed attempt on a/b has rollups of its own.
    let served = |s: &Store, from: i64| -> Vec<_> {
        let all = s.rollups(from).unwrap();
        all.into_iter()
            .filter(|((_, p, _, _), _)| p == "groq")
            .collect()
    };
    let rollups = served(s, 0);
    assert_eq!(rollups.len(), 1);
    let ((hour, provider, model, client), first) = &rollups[0];
    assert_eq!(
        (*hour, provider.as_str(), model.as_str(), client.as_str()),
        (0, "groq", "x", "default")
    );
    assert_eq!(
        (
            first.requests,
            first.succeeded,
            first.tokens_in,
            first.failed_attempts
        ),
        (2, 2, 22, 0)
    );
    let later = s.rollups(HOUR).unwrap();
    assert_eq!(later.iter().map(|(_, r)| r.failed).sum::<u64>(), 1);
    assert_eq!(later.iter().map(|(_, r)| r.failed_attempts).sum::<u64>(), 1);
    assert_eq!(s.requests_per_hour(0).unwrap(), [(0, 2), (HOUR, 1)]);
    // A later batch in the same hour merges into its rollup.
    s.insert_requests(&[request("r4", 3000)]).unwrap();
    assert_eq!(served(s, 0)[0].1.requests, 3);
}

fn pruning_the_log_prunes_its_hourly_rollups(s: &Store) {
    const HOUR: i64 = 3_600_000;
    let at = |id: &str, at_ms: i64| RequestRow {
        attempts: Vec::new(),
        ..request(id, at_ms)
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
    assert_eq!(hours(s), vec![0, HOUR, 2 * HOUR]);
    // The cut falls inside the second hour: its requests before the cut go, and the hour
    // wholly before the cut loses its rollup; the hour the cut falls in keeps its own.
    assert_eq!(s.prune_requests(HOUR + 20, 1).unwrap(), 2);
    assert_eq!(hours(s), vec![HOUR, 2 * HOUR]);
    assert_eq!(s.prune_requests(3 * HOUR, 1000).unwrap(), 1);
    assert!(hours(s).is_empty());
    assert_eq!(s.count_requests().unwrap(), 0);
}

// ---- PostgreSQL only ----

/// Four replicas opening one empty database at once all come up, on a schema applied once.
#[test]
fn concurrent_migrations_all_succeed_once() {
    let pg = Postgres::start();
    let url = pg.database();
    let opened: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| Store::connect(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in &opened {
        let store = store.as_ref().expect("every replica comes up");
        assert!(store.keys().unwrap().is_empty());
    }
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let rows = c.query("SELECT version FROM schema_version", &[]).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[test]
fn a_schema_from_a_newer_freeway_is_refused() {
    let pg = Postgres::start();
    let url = pg.database();
    drop(Store::connect(&url).unwrap());
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    c.batch_execute("UPDATE schema_version SET version = 99")
        .unwrap();
    let err = format!("{:#}", Store::connect(&url).err().unwrap());
    assert!(err.contains("newer Freeway"), "{err}");
}

/// Replicas reload when keys, client keys, the chain or settings change, not when a replica
/// saves its ledger or notes when client keys were used.
#[test]
fn the_change_counter_moves_for_what_replicas_reload() {
    let pg = Postgres::start();
    let url = pg.database();
    let (a, b) = (Store::connect(&url).unwrap(), Store::connect(&url).unwrap());
    let v0 = b.data_version().unwrap();
    a.insert_client_key(&client_key("c1", "alice", 1)).unwrap();
    let v1 = b.data_version().unwrap();
    assert_ne!(v1, v0, "a new client key");
    a.touch_client_keys(&[("c1".into(), 5)]).unwrap();
    a.save_ledger(&[("s".into(), "{}".into())], &[], 1, 9)
        .unwrap();
    a.insert_session(&SessionRow {
        hash: [1; 32],
        csrf: "c".into(),
        created_ms: 1,
        seen_ms: 1,
    })
    .unwrap();
    a.insert_requests(&[request("r", 1)]).unwrap();
    assert_eq!(b.data_version().unwrap(), v1, "busy writes do not count");
    a.insert_key(&key("k1", "groq", 1)).unwrap();
    let v2 = b.data_version().unwrap();
    assert_ne!(v2, v1, "a new provider key");
    // A health check's error/ok flip does not reload every replica; a rejected key does.
    a.set_key_health("k1", "error", 0, Some("502"), 5, false)
        .unwrap();
    a.set_key_health("k1", "ok", 0, None, 6, false).unwrap();
    assert_eq!(b.data_version().unwrap(), v2, "health flips do not count");
    a.set_key_health("k1", "invalid", 3, Some("401"), 7, true)
        .unwrap();
    let flipped = b.data_version().unwrap();
    assert_ne!(flipped, v2, "a key rejected and disabled");
    let v2 = flipped;
    a.set_client_limits("alice", Some("{}")).unwrap();
    let v3 = b.data_version().unwrap();
    assert_ne!(v3, v2, "new limits");
    a.set_chain(&[ChainRow {
        model: "m".into(),
        enabled: true,
    }])
    .unwrap();
    assert_ne!(b.data_version().unwrap(), v3, "the chain");
}

/// The store goes away: calls fail as "unavailable" (no password in the message), and work
/// again when it returns, without a new `Store`.
#[test]
fn a_store_that_goes_away_is_reported_and_reconnected() {
    let pg = Postgres::start();
    let url = pg.database().replace("freeway@", "freeway:hunter2@");
    let store = Store::connect(&url).unwrap();
    store.set_setting("x", b"1").unwrap();
    pg.stop();
    let err = store.setting("x").unwrap_err();
    assert!(freeway::store::is_unavailable(&err), "{err:#}");
    let text = format!("{err:#}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{}", pg.port)), "{text}");
    pg.start_again();
    assert_eq!(store.setting("x").unwrap().as_deref(), Some(&b"1"[..]));
}

// ---- Freeway on PostgreSQL ----

/// Every replica must be given the same encryption key.
const ENCRYPTION_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Freeway on the PostgreSQL at `url`, with an OpenAI-compatible `mock` provider (`keys`
/// from the config, or none).
async fn replica(url: &str, mock: &crate::harness::Mock, keys: bool) -> crate::harness::TestApp {
    let keys = if keys { "keys = [\"sk-up\"]\n" } else { "" };
    let toml = format!(
        "[store]\nurl = \"{url}\"\n[custom.mock]\nbase_url = \"{}\"\n{keys}models = [{{ id = \"mock-model\" }}]\n",
        mock.url("/v1")
    );
    crate::harness::TestApp::start(
        crate::harness::Options::new(toml).env("FREEWAY_ENCRYPTION_KEY", ENCRYPTION_KEY),
    )
    .await
    .unwrap()
}

/// A key added on one replica serves on another (they poll the change counter every second),
/// and every replica's admin API shows it.
#[tokio::test]
async fn replicas_on_postgres_share_keys_and_the_request_log() {
    use crate::harness::{Mock, ask};
    let pg = Postgres::start();
    let url = pg.database();
    let mock = Mock::start().await;
    let a = replica(&url, &mock, false).await;
    let b = replica(&url, &mock, false).await;
    // A custom endpoint also serves without a key; the key shows in what the upstream gets.
    let bearer = |mock: &Mock| mock.chat_calls().last().and_then(|c| c.bearer());
    assert_eq!(b.chat(ask("mock/mock-model")).await.status(), 200);
    assert_eq!(bearer(&mock), None, "no key yet");

    let admin = crate::admin::setup(&a).await;
    let (status, _) = admin
        .post(
            "/admin/api/keys",
            serde_json::json!({"provider": "mock", "key": "sk-added-on-a"}),
        )
        .await;
    assert!(status < 300, "{status}");
    let mut served = false;
    for _ in 0..200 {
        let status = b.chat(ask("mock/mock-model")).await.status();
        if status == 200 && bearer(&mock).as_deref() == Some("sk-added-on-a") {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(served, "the key added on a never served on b");
    // The admin side of a shows the key, and the request b served.
    let (status, keys) = admin.get("/admin/api/keys").await;
    assert_eq!(status, 200);
    assert!(
        keys.to_string().contains("mock"),
        "the key is listed: {keys}"
    );
    let rows = a.logged(1, 10).await;
    assert!(
        rows.iter()
            .any(|r| r.status == 200 && r.served_by.as_deref() == Some("mock/mock-model"))
    );
}

/// PostgreSQL stops: `/v1` keeps serving, the admin side answers 503 saying why (no password),
/// and the request-log rows written meanwhile arrive when it is back.
#[tokio::test]
async fn with_the_store_down_v1_serves_and_admin_answers_503() {
    use crate::harness::{Mock, ask};
    let pg = Postgres::start();
    let url = pg.database().replace("freeway@", "freeway:hunter2@");
    let mock = Mock::start().await;
    let t = replica(&url, &mock, true).await;
    let admin = crate::admin::setup(&t).await;
    assert_eq!(t.chat(ask("mock/mock-model")).await.status(), 200);
    t.logged(1, 10).await;

    pg.stop();
    for _ in 0..3 {
        assert_eq!(t.chat(ask("mock/mock-model")).await.status(), 200);
    }
    let (status, body) = admin.get("/admin/api/keys").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unavailable");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot be reached"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let page = t
        .client
        .get(t.url("/admin/keys"))
        .header("cookie", admin.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503, "the pages too");

    pg.start_again();
    let rows = t.logged(4, 10).await;
    assert_eq!(
        rows.len(),
        4,
        "every row written while the store was down arrived"
    );
    let (status, _) = admin.get("/admin/api/keys").await;
    assert_eq!(status, 200);
}

/// The CLI on the store of `FREEWAY_STORE_URL`: a key added from one machine (its own data
/// directory, the shared encryption key) is listed from another; a wrong key is refused, and
/// `freeway status` names the store without its password.
#[test]
fn the_cli_uses_the_postgresql_store() {
    use crate::process::{run, text};
    let pg = Postgres::start();
    let url = pg.database().replace("freeway@", "freeway:hunter2@");
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [
        ("FREEWAY_STORE_URL", url.as_str()),
        ("FREEWAY_ENCRYPTION_KEY", ENCRYPTION_KEY),
    ];
    let out = run(
        one.path(),
        &env,
        &["keys", "add", "groq"],
        "gsk_on_pg_1234567890\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(two.path(), &env, &["keys", "list"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("groq"), "{}", text(&out.stdout));

    let wrong = "b".repeat(64);
    let out = run(
        two.path(),
        &[
            ("FREEWAY_STORE_URL", url.as_str()),
            ("FREEWAY_ENCRYPTION_KEY", &wrong),
        ],
        &["keys", "list"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not the one"),
        "{}",
        text(&out.stderr)
    );

    let out = run(two.path(), &env, &["status"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("store: postgresql 127.0.0.1:{}/", pg.port)),
        "{shown}"
    );
    assert!(!shown.contains("hunter2") && !text(&out.stderr).contains("hunter2"));
}
