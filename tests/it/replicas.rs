//! Several replicas sharing one Redis (SPEC 5.1): caps held across replicas to the request,
//! client limits, cooldowns and sticky sessions shared, and Redis stopped under load.
//!
//! Each replica is a whole Freeway (its own data directory) started in this process; the
//! Redis is Debian's `redis-server` on a loopback port with throwaway data.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use freeway::ledger::Ledger;

use crate::harness::{CLIENT_KEY, Mock, Options, Reply, TestApp, ask};
use crate::redis_server::RedisServer;

/// A config sharing `redis` with a custom endpoint `mock` serving `mock-model` with
/// `limits` (TOML fields of the model entry).
fn shared(redis: &RedisServer, mock: &Mock, limits: &str, extra: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\n\
         [custom.mock]\nbase_url = \"{url}\"\nkeys = [\"sk-mock-upstream-key\"]\n\
         models = [{{ id = \"mock-model\" {limits} }}]\n\
         [custom.spare]\nbase_url = \"{url}\"\nkeys = [\"sk-spare-upstream-key\"]\n\
         models = [{{ id = \"other-model\" }}]\n{extra}",
        redis.url(),
        url = mock.url("/v1")
    )
}

async fn replicas(n: usize, toml: &str) -> Vec<Arc<TestApp>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Arc::new(TestApp::start(Options::new(toml)).await.unwrap()));
    }
    out
}

/// The client key with limits of its own in the client-limit tests.
const TEAM_KEY: &str = "fw-team-key-0123456789";

/// `total` requests for `model` spread round-robin over `apps`, all at once; the statuses.
async fn burst(apps: &[Arc<TestApp>], model: &str, total: usize) -> Vec<u16> {
    burst_as(apps, CLIENT_KEY, model, total).await
}

/// [`burst`] with the client key `key`.
async fn burst_as(apps: &[Arc<TestApp>], key: &str, model: &str, total: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for i in 0..total {
        let app = Arc::clone(&apps[i % apps.len()]);
        let (key, model) = (key.to_string(), model.to_string());
        tasks.push(tokio::spawn(async move {
            app.client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&ask(&model))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn readyz(app: &TestApp) -> Value {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Wait (10 s at most) until `holds`, else fail naming `what`.
async fn until(what: &str, mut holds: impl FnMut() -> bool) {
    for _ in 0..200 {
        if holds() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened within 10 s: {what}");
}

/// Wait until every replica's heartbeat has been answered since `after_ms` (so each has read
/// again what the pools it knows hold, and counted the replicas).
async fn until_beat(apps: &[Arc<TestApp>], after_ms: i64) {
    until("a heartbeat of every replica", || {
        apps.iter().all(|a| {
            let h = a.app.cluster.as_ref().unwrap().health();
            h.beat_ms.is_some_and(|t| t > after_ms)
        })
    })
    .await;
}

/// Now, on the replicas' clock.
fn now_ms() -> i64 {
    use freeway::ledger::Clock;
    freeway::ledger::SystemClock.now_ms()
}

/// Wait until Redis answers `command` with `reply` (its first line).
async fn until_redis(redis: &RedisServer, command: &str, reply: &str) {
    until(&format!("Redis answers {command:?} with {reply:?}"), || {
        redis.command(command).is_ok_and(|r| r == reply)
    })
    .await;
}

/// Wait until `/readyz` of `app` says the ledger is `mode` (10 s at most).
async fn until_ledger(app: &TestApp, mode: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        last = readyz(app).await;
        if last["cluster"]["ledger"] == mode {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the ledger never became {mode:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_hold_a_daily_cap_to_the_request_under_90_concurrent_requests() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|_, _| {
        std::thread::sleep(Duration::from_millis(5));
        Reply::ok("hi")
    });
    let apps = replicas(3, &shared(&redis, &mock, ", rpd = 30", "")).await;
    let statuses = burst(&apps, "mock/mock-model", 90).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // Exactly the cap: none over (the upstream never sees request 31), none lost to a
    // replica that believed the cap full while it was not.
    assert_eq!(mock.count(), 30, "upstream calls, statuses: {statuses:?}");
    assert_eq!(ok, 30);
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // The dashboards of every replica see the whole cluster's day.
    let used = apps[0].get_json("/v1/quota").await;
    let text = used.to_string();
    assert!(text.contains("mock-model"), "{text}");
    // A replica that served nothing itself still paces by what the others used.
    let seen = apps[2]
        .app
        .ledger
        .usage(
            &freeway::ledger::Scope::model("mock", "mock-model", &key_id(&apps[2])),
            freeway::catalog::Reset::Midnight(chrono_tz::UTC),
        )
        .day_requests;
    assert!(seen >= 10, "replica 3 sees {seen} requests of the day");
}

/// The id of the one provider key of `app`.
fn key_id(app: &TestApp) -> String {
    app.app.live.keys.rotated("mock")[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_keys_daily_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let team = "[auth]\napi_keys = [{ name = \"team\", key = \"fw-team-key-0123456789\" }]\n\
                [auth.limits.team]\nrpd = 7\n";
    let apps = replicas(3, &shared(&redis, &mock, "", team)).await;
    let statuses = burst_as(&apps, TEAM_KEY, "mock/mock-model", 21).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 7, "{statuses:?}");
    assert_eq!(mock.count(), 7);
    // The other client key has no limit of its own.
    assert_eq!(apps[1].chat(ask("mock/mock-model")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_keys_requests_in_flight_are_counted_across_replicas() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|_, _| {
        std::thread::sleep(Duration::from_millis(600));
        Reply::ok("hi")
    });
    let team = "[auth]\napi_keys = [{ name = \"team\", key = \"fw-team-key-0123456789\" }]\n\
                [auth.limits.team]\nconcurrent = 2\n";
    let apps = replicas(3, &shared(&redis, &mock, "", team)).await;
    let statuses = burst_as(&apps, TEAM_KEY, "mock/mock-model", 6).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(
        ok, 2,
        "two in flight at once over three replicas: {statuses:?}"
    );
    // The places are given back (in the background): the next ones pass.
    let mut again = Vec::new();
    for _ in 0..100 {
        again = burst_as(&apps[2..], TEAM_KEY, "mock/mock-model", 1).await;
        if again == [200] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again, vec![200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_seen_by_one_replica_cools_the_model_on_every_replica() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.model() == "mock-model" {
            Reply::status(429, "slow down").with_header("retry-after", "120")
        } else {
            Reply::ok("from the other model")
        }
    });
    let apps = replicas(2, &shared(&redis, &mock, "", "")).await;
    let first = apps[0].chat(ask("auto")).await;
    assert_eq!(first.status(), 200);
    let before = mock
        .chat_calls()
        .iter()
        .filter(|c| c.model() == "mock-model")
        .count();
    assert_eq!(before, 1, "the first replica tried the model once");
    // The cooldown reaches Redis (written in the background).
    let cool = format!("EXISTS freeway:cool:mock/mock-model/{}", key_id(&apps[0]));
    until_redis(&redis, &cool, ":1").await;
    for _ in 0..3 {
        let r = apps[1].chat(ask("auto")).await;
        assert_eq!(r.status(), 200);
    }
    let after = mock
        .chat_calls()
        .iter()
        .filter(|c| c.model() == "mock-model")
        .count();
    assert_eq!(
        after, 1,
        "the second replica never sent the cooling model a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_saying_a_model_is_spent_cools_it_on_every_replica() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|r, _| {
        if r.model() == "mock-model" {
            Reply::ok("the last one")
                .with_header("x-ratelimit-remaining-requests", "0")
                .with_header("x-ratelimit-reset-requests", "2m")
        } else {
            Reply::ok("from the other model")
        }
    });
    let apps = replicas(2, &shared(&redis, &mock, ", rpm = 100", "")).await;
    assert_eq!(apps[0].chat(ask("auto")).await.status(), 200);
    let spent = |m: &Mock| {
        m.chat_calls()
            .iter()
            .filter(|c| c.model() == "mock-model")
            .count()
    };
    assert_eq!(spent(&mock), 1);
    let cool = format!("EXISTS freeway:cool:mock/mock-model/{}", key_id(&apps[0]));
    until_redis(&redis, &cool, ":1").await;
    for _ in 0..3 {
        assert_eq!(apps[1].chat(ask("auto")).await.status(), 200);
    }
    assert_eq!(
        spent(&mock),
        1,
        "the other replica asked a model its upstream said was spent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_stays_on_its_model_whichever_replica_takes_the_next_turn() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|r, _| Reply::ok(&format!("answered by {}", r.model())));
    // Replica 1 has only the spare model (say its mock key was removed there); replica 2 has
    // both and prefers mock-model.
    let only_spare = format!(
        "[cluster]\nredis_url = \"{}\"\n[custom.spare]\nbase_url = \"{}\"\n\
         keys = [\"sk-spare-upstream-key\"]\nmodels = [{{ id = \"other-model\" }}]\n",
        redis.url(),
        mock.url("/v1")
    );
    let apps = [
        Arc::new(TestApp::start(Options::new(only_spare)).await.unwrap()),
        Arc::new(
            TestApp::start(Options::new(shared(&redis, &mock, "", "")))
                .await
                .unwrap(),
        ),
    ];
    let turn = |assistant: Option<&str>| {
        let mut messages = vec![json!({"role": "user", "content": "plan a trip"})];
        if let Some(a) = assistant {
            messages.push(json!({"role": "assistant", "content": a}));
            messages.push(json!({"role": "user", "content": "and then?"}));
        }
        json!({"model": "auto", "messages": messages})
    };
    let first: Value = apps[0].chat(turn(None)).await.json().await.unwrap();
    let said = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(said, "answered by other-model");
    until("the sticky session reaches Redis", || {
        redis
            .command("KEYS freeway:sticky:*")
            .is_ok_and(|r| r != "*0")
    })
    .await;
    // Replica 2 would pick mock-model, but the conversation is on other-model.
    let second: Value = apps[1].chat(turn(Some(&said))).await.json().await.unwrap();
    assert_eq!(
        second["choices"][0]["message"]["content"], "answered by other-model",
        "{second}"
    );
    // A new conversation on replica 2 takes its preferred model.
    let fresh: Value = apps[1]
        .chat(json!({"model": "auto", "messages": [{"role": "user", "content": "new"}]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        fresh["choices"][0]["message"]["content"],
        "answered by mock-model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_under_load_each_replica_serves_its_share_and_no_cap_is_exceeded() {
    let mut redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let apps = replicas(3, &shared(&redis, &mock, ", rpd = 60", "")).await;
    for app in &apps {
        until_ledger(app, "shared").await;
    }
    // Every replica sees the others' heartbeats (N = 3).
    until("three replicas beating", || {
        apps.iter()
            .all(|a| a.app.cluster.as_ref().unwrap().health().replicas == 3)
    })
    .await;
    let statuses = burst(&apps, "mock/mock-model", 30).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(mock.count(), 30);
    // A heartbeat later every replica has read what the pool holds (a share is taken of what
    // was left as last seen: at most a heartbeat old).
    until_beat(&apps, now_ms()).await;
    redis.stop();
    // Load while Redis is away: each replica may use 1/3 of the 30 left, as last seen.
    let statuses = burst(&apps, "mock/mock-model", 60).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        mock.count() <= 60,
        "the cap was exceeded: {} upstream calls",
        mock.count()
    );
    assert!(
        ok > 0,
        "the replicas kept serving from their shares: {statuses:?}"
    );
    let r = until_ledger(&apps[0], "local share").await;
    assert!(
        r["cluster"]["detail"]
            .as_str()
            .unwrap()
            .contains("Redis unreachable"),
        "{r}"
    );
    // Redis returns: back to the shared ledger, with what was used meanwhile counted there.
    redis.restart();
    for app in &apps {
        until_ledger(app, "shared").await;
    }
    let _ = burst(&apps, "mock/mock-model", 60).await;
    assert!(
        mock.count() <= 60,
        "the cap was exceeded: {} upstream calls",
        mock.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_with_sigkill_under_load_never_lets_the_others_exceed_a_cap() {
    use crate::process::start_server;
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    // Slow answers, so the killed replica has requests in flight when it dies.
    mock.on(|_, _| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::ok("hi")
    });
    let toml = shared(&redis, &mock, ", rpd = 40", "");
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("freeway.toml"), &toml).unwrap();
        let env = [
            ("FREEWAY_LISTEN", "127.0.0.1:0"),
            ("FREEWAY_API_KEY", CLIENT_KEY),
        ];
        servers.push(start_server(dir.path(), &env).unwrap());
        dirs.push(dir);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| s.url("/v1/chat/completions"))
        .collect();
    let client = reqwest::Client::new();
    let send = |url: String| {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(CLIENT_KEY)
                .json(&ask("mock/mock-model"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    };
    let mut tasks = Vec::new();
    for i in 0..60 {
        tasks.push(send(urls[i % 3].clone()));
    }
    // Kill replica 3 while its requests are in flight.
    tokio::time::sleep(Duration::from_millis(150)).await;
    servers.pop().unwrap().kill9();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap() == 200);
    }
    // The survivors go on until the pool is spent.
    let mut more = Vec::new();
    for i in 0..30 {
        more.push(send(urls[i % 2].clone()));
    }
    for t in more {
        ok += usize::from(t.await.unwrap() == 200);
    }
    let upstream = mock.count();
    assert!(upstream <= 40, "cap 40, the upstream received {upstream}");
    // What the killed replica had in flight stays counted: the survivors' answers plus what
    // reached the upstream from the dead one never pass the cap.
    assert!(ok <= 40, "{ok} answered");
    assert!(ok >= 20, "the survivors kept serving: {ok} answered");
}

/// The whole of SPEC 5.1 at once: three replicas on one PostgreSQL and one Redis. A key added
/// through one replica's admin API serves on the others, and its daily cap holds to the
/// request across all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_postgres_and_redis_share_a_key_added_on_one_and_its_cap() {
    let pg = crate::servers::Postgres::start();
    let url = pg.database();
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let toml = format!(
        "[store]\nurl = \"{url}\"\n[cluster]\nredis_url = \"{}\"\n\
         [custom.mock]\nbase_url = \"{}\"\nmodels = [{{ id = \"mock-model\", rpd = 30 }}]\n",
        redis.url(),
        mock.url("/v1")
    );
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut apps = Vec::new();
    for _ in 0..3 {
        let opts = Options::new(toml.clone()).env("FREEWAY_ENCRYPTION_KEY", key);
        apps.push(Arc::new(TestApp::start(opts).await.unwrap()));
    }
    let admin = crate::admin::setup(&apps[0]).await;
    let (status, _) = admin
        .post(
            "/admin/api/keys",
            json!({"provider": "mock", "key": "sk-added-on-one"}),
        )
        .await;
    assert!(status < 300, "{status}");
    // Every replica serves with it once it polled the store's change counter (a custom
    // endpoint without a key is served keyless until then).
    let id = key_id(&apps[0]);
    for app in &apps {
        let mut loaded = false;
        for _ in 0..100 {
            loaded = key_id(app) == id;
            if loaded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(loaded, "a replica never loaded the key added on another");
    }
    let statuses = burst(&apps, "mock/mock-model", 90).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(mock.count(), 30, "{statuses:?}");
    assert_eq!(ok, 30);
    assert!(
        mock.chat_calls()
            .iter()
            .all(|c| c.bearer().as_deref() == Some("sk-added-on-one"))
    );
    // Every replica's dashboard sees every request (one request log).
    let rows = apps[2].logged(90, 200).await;
    assert_eq!(rows.iter().filter(|r| r.status == 200).count(), 30);
}

/// `freeway status` asks Redis itself: how many replicas beat, or that Redis is unreachable
/// and the replicas serve from their shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeway_status_says_whether_the_ledger_is_shared() {
    let mut redis = RedisServer::start();
    let mock = Mock::start().await;
    let toml = shared(&redis, &mock, "", "");
    let app = TestApp::start(Options::new(toml.clone())).await.unwrap();
    until_ledger(&app, "shared").await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("freeway.toml"), &toml).unwrap();
    let status = |cwd: &std::path::Path| {
        let out = crate::process::run(cwd, &[], &["status"], "");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = status(cwd.path());
    assert!(
        said.contains("cluster: shared ledger on Redis") && said.contains("1 replica(s) beating"),
        "{said}"
    );
    redis.stop();
    let said = status(cwd.path());
    assert!(said.contains("cluster: Redis unreachable"), "{said}");
    assert!(said.contains("local share"), "{said}");
    drop(app);
}

/// Redis stops in the middle of a minute that one replica filled: the others' shares are of
/// what was left of that minute (nothing), not 1/N of the whole cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_mid_minute_the_shares_are_of_what_the_minute_had_left() {
    let mut redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.always(Reply::ok("hi"));
    let apps = replicas(3, &shared(&redis, &mock, ", rpm = 30", "")).await;
    // Every replica has reserved in the pool once; then the first fills the minute.
    for app in &apps {
        assert_eq!(app.chat(ask("mock/mock-model")).await.status(), 200);
    }
    let statuses = burst(&apps[..1], "mock/mock-model", 27).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // A heartbeat later every replica has read what the minute holds.
    until_beat(&apps, now_ms()).await;
    redis.stop();
    let statuses = burst(&apps[1..], "mock/mock-model", 20).await;
    assert_eq!(
        mock.count(),
        30,
        "the minute's cap was exceeded while Redis was away: {statuses:?}"
    );
    let r = until_ledger(&apps[1], "local share").await;
    assert_eq!(r["cluster"]["replicas"], 3, "{r}");
}
