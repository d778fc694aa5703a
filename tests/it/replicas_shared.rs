//! What replicas share besides the ledger (SPEC 2.8 with 5.1): an `Idempotency-Key` running on
//! one replica is not run again by another (the duplicate waits and replays the answer, or is
//! refused when its body differs), and the answer cache answers on every replica.
//!
//! Each replica is a whole Freeway with its own data directory (its own SQLite): what they
//! share goes through the real `redis-server` alone.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{
    CLIENT_KEY, Mock, Options, Reply, TestApp, ask, eventually, gated_stream, sse_data, sse_text,
    stream_ask,
};
use crate::redis_server::RedisServer;

/// A config sharing `redis`, with the custom endpoint `mock` serving `mock-model`.
fn shared(redis: &RedisServer, mock: &Mock, extra: &str) -> String {
    format!(
        "[cluster]\nredis_url = \"{}\"\n\
         [custom.mock]\nbase_url = \"{}\"\nkeys = [\"sk-mock-upstream-key\"]\n\
         models = [{{ id = \"mock-model\" }}]\n{extra}",
        redis.url(),
        mock.url("/v1")
    )
}

async fn two(toml: &str) -> [Arc<TestApp>; 2] {
    [
        Arc::new(TestApp::start(Options::new(toml)).await.unwrap()),
        Arc::new(TestApp::start(Options::new(toml)).await.unwrap()),
    ]
}

/// POST `body` to the chat route of `app` with `Idempotency-Key: key`, in a task of its own.
fn send(app: &Arc<TestApp>, key: &str, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
    let app = Arc::clone(app);
    let key = key.to_string();
    tokio::spawn(async move {
        app.client
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    })
}

/// The keys Redis holds under `pattern` (read by the test itself).
async fn redis_keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The time `key` has left in Redis (ms; negative when it has no TTL or does not exist).
async fn pttl(redis: &RedisServer, key: &str) -> i64 {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_running_on_one_replica_is_waited_for_and_replayed_by_another() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    // The first answer is slow: the duplicate on the other replica arrives while it runs.
    mock.on(|_, n| {
        let reply = Reply::ok(&format!("answer number {n}"));
        if n == 0 {
            Reply::Delay(Duration::from_millis(500), Box::new(reply))
        } else {
            reply
        }
    });
    let [a, b] = two(&shared(&redis, &mock, "")).await;
    let first = send(&a, "order-17", ask("mock-model"));
    assert!(
        eventually(|| mock.count() == 1).await,
        "A reached the upstream"
    );
    let second = send(&b, "order-17", ask("mock-model"));
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.status(), 200);
    assert_eq!(second.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(
        first.headers()["x-routed-via"],
        second.headers()["x-routed-via"]
    );
    let (first, second) = (first.text().await.unwrap(), second.text().await.unwrap());
    assert_eq!(first, second, "the same answer, byte for byte");
    assert!(first.contains("answer number 0"), "{first}");
    assert_eq!(mock.chat_calls().len(), 1, "one upstream call for both");
    // Later retries on either replica are replays too.
    let again = send(&b, "order-17", ask("mock-model")).await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first);
    assert_eq!(mock.chat_calls().len(), 1);
    // The claim was released: only the kept answer is left in Redis.
    let keys = redis_keys(&redis, "freeway:idem:*").await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].ends_with(":run"), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_running_on_one_replica_is_replayed_whole_by_another() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    let gate = gated_stream(&mock, "half way", " and the rest");
    let [a, b] = two(&shared(&redis, &mock, "")).await;
    let first = send(&a, "stream-1", stream_ask());
    assert!(
        eventually(|| mock.count() == 1).await,
        "A reached the upstream"
    );
    let second = send(&b, "stream-1", stream_ask());
    // B waits while A's stream is half way; then A's stream ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "B answered before A's run ended");
    // A's claim lapses on its own unless renewed: a replica killed mid-run frees the key.
    let claims = redis_keys(&redis, "freeway:idem:*:run").await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    let ttl = pttl(&redis, &claims[0]).await;
    assert!(ttl > 0 && ttl <= 30_000, "the claim's TTL: {ttl} ms");
    gate.notify_one();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let (first, second) = (sse_data(first).await, sse_data(second).await);
    assert_eq!(sse_text(&first), "half way and the rest");
    assert_eq!(first, second, "the whole stream from its start");
    assert_eq!(mock.chat_calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_body_with_a_key_running_on_another_replica_is_refused() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.always(Reply::Delay(
        Duration::from_millis(500),
        Box::new(Reply::ok("slow answer")),
    ));
    let [a, b] = two(&shared(&redis, &mock, "")).await;
    let first = send(&a, "order-18", ask("mock-model"));
    assert!(
        eventually(|| mock.count() == 1).await,
        "A reached the upstream"
    );
    let other = json!({"model": "mock-model", "messages": [{"role": "user", "content": "else"}]});
    let r = send(&b, "order-18", other).await.unwrap();
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "idempotency_key_reused");
    assert_eq!(first.await.unwrap().status(), 200);
    assert_eq!(mock.chat_calls().len(), 1);
    // Once kept, the other body is still refused on the other replica.
    let other = json!({"model": "mock-model", "messages": [{"role": "user", "content": "else"}]});
    assert_eq!(send(&b, "order-18", other).await.unwrap().status(), 422);
    assert_eq!(mock.chat_calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_run_on_one_replica_lets_the_waiting_replica_run_it_afresh() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|_, n| {
        if n == 0 {
            Reply::Delay(
                Duration::from_millis(500),
                Box::new(Reply::status(500, "upstream trouble")),
            )
        } else {
            Reply::ok("fine now")
        }
    });
    let toml = shared(&redis, &mock, "[routing]\ncooldown_on_5xx = \"1ms\"\n");
    let [a, b] = two(&toml).await;
    let first = send(&a, "order-19", ask("mock-model"));
    assert!(
        eventually(|| mock.count() == 1).await,
        "A reached the upstream"
    );
    let second = send(&b, "order-19", ask("mock-model"));
    assert_eq!(first.await.unwrap().status(), 502);
    let second = second.await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.text().await.unwrap().contains("fine now"));
    assert_eq!(mock.chat_calls().len(), 2, "a failure is not kept");
    assert_eq!(
        mock.max_in_flight(),
        1,
        "B ran it only once A's run had ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_cached_on_one_replica_is_a_hit_on_another() {
    let redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|_, n| Reply::ok(&format!("answer number {n}")));
    let [a, b] = two(&shared(&redis, &mock, "[cache]\nenabled = true\n")).await;
    let first = a.chat(ask("mock-model")).await;
    assert_eq!(first.headers()["x-freeway-cache"], "miss");
    let via = first.headers()["x-routed-via"].clone();
    let first: Value = first.json().await.unwrap();
    // The entry reaches Redis from the background writer.
    let mut cached = Vec::new();
    for _ in 0..100 {
        cached = redis_keys(&redis, "freeway:cache:*").await;
        if !cached.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cached.len(), 1, "{cached:?}");
    let hit = b.chat(ask("mock-model")).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.headers()["x-freeway-cache"], "hit");
    assert_eq!(hit.headers()["x-routed-via"], via);
    let hit: Value = hit.json().await.unwrap();
    assert_eq!(
        hit["choices"][0]["message"]["content"],
        first["choices"][0]["message"]["content"]
    );
    // Streamed when asked, from the same entry.
    let streamed = b
        .chat(json!({"model": "mock-model", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(streamed.headers()["x-freeway-cache"], "hit");
    assert_eq!(sse_text(&sse_data(streamed).await), "answer number 0");
    assert_eq!(mock.chat_calls().len(), 1, "one upstream call in all");
    // B logged them as cache hits: no quota spent, counted as saved.
    let rows = b.logged(2, 10).await;
    assert!(
        rows.iter()
            .all(|r| r.served_by.as_deref() == Some(&format!("cache/{}", via.to_str().unwrap()))),
        "{:?}",
        rows.iter().map(|r| &r.served_by).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_idempotency_and_the_cache_are_the_replicas_own() {
    let mut redis = RedisServer::start();
    let mock = Mock::start().await;
    mock.on(|_, n| Reply::ok(&format!("answer number {n}")));
    let toml = shared(&redis, &mock, "[cache]\nenabled = true\n");
    let a = Arc::new(TestApp::start(Options::new(toml)).await.unwrap());
    redis.stop();
    let body = json!({"model": "mock-model", "messages": [{"role": "user", "content": "key"}]});
    let first = send(&a, "order-20", body.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let again = send(&a, "order-20", body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(mock.chat_calls().len(), 1);
    assert_eq!(
        a.chat(ask("mock-model")).await.headers()["x-freeway-cache"],
        "miss"
    );
    assert_eq!(
        a.chat(ask("mock-model")).await.headers()["x-freeway-cache"],
        "hit"
    );
    assert_eq!(mock.chat_calls().len(), 2);
}
