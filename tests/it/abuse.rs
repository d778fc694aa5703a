//! Holding under abuse: slow and idle clients, slow upstreams, bad message shapes, keys that
//! look like anything.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closes `conn` within `within` (reads until EOF or an error).
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

fn timeouts(extra: &str) -> String {
    format!(
        "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nbody_read_timeout = \"1s\"\nsend_timeout = \"1s\"\n{extra}"
    )
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed() {
    let t = TestApp::spawn(&timeouts("")).await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(t.addr).await.unwrap());
    }
    // A partial request line, then a byte now and then: never a whole head.
    let mut slow = TcpStream::connect(t.addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    for c in &mut silent {
        assert!(
            closed_within(c, Duration::from_secs(20)).await,
            "a silent connection stays open"
        );
    }
    assert!(drip.await.unwrap(), "a dripping request head stays open");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let t = TestApp::spawn(&timeouts("")).await;
    let mut c = TcpStream::connect(t.addr).await.unwrap();
    c.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut c, Duration::from_secs(20)).await,
        "an idle connection stays open"
    );
}

#[tokio::test]
async fn a_body_that_never_ends_times_out() {
    let t = TestApp::spawn(&timeouts("")).await;
    let mut c = TcpStream::connect(t.addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{{\"messages\""
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the request hangs");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
}

#[tokio::test]
async fn a_client_that_stops_reading_releases_the_upstream() {
    let mock = Mock::start().await;
    // An endless answer in big pieces: the client's socket fills up.
    let big = "x".repeat(64 * 1024);
    mock.on(move |r, _| {
        let m = r.model();
        let mut pieces = vec![Piece::Raw(chunk(&m, "start"))];
        pieces.extend((0..600).map(|_| Piece::Raw(chunk(&m, &big))));
        Reply::Stream(pieces)
    });
    let t = TestApp::spawn(&format!("{}{}", timeouts(""), custom(&mock, ""))).await;
    let mut c = TcpStream::connect(t.addr).await.unwrap();
    let body = stream_ask().to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading. The server gives up on the client and drops the upstream request.
    assert!(
        eventually(|| mock.in_flight() == 0).await,
        "the upstream request is still open"
    );
    let rows = t.logged(1, 5).await;
    assert_eq!(rows[0].status, 499, "{:?}", rows[0]);
    drop(c);
}

#[tokio::test]
async fn past_the_connection_cap_the_stalest_idle_connection_gives_way() {
    let t = TestApp::spawn("[http]\nmax_connections = 8\n").await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(t.addr).await.unwrap());
    }
    let resp = t.client.get(t.url("/livez")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut closed = 0;
    for c in &mut idle {
        if closed_within(c, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection made room");
}

#[tokio::test]
async fn a_dripping_upstream_cannot_hold_a_request_past_its_budget() {
    let mock = Mock::start().await;
    // Keep-alive comments forever, never an answer.
    mock.on(|_, _| {
        let mut pieces = Vec::new();
        for _ in 0..3_000 {
            pieces.push(Piece::Raw(": ping\n\n".into()));
            pieces.push(Piece::Sleep(Duration::from_millis(100)));
        }
        Reply::Stream(pieces)
    });
    let t = TestApp::spawn(&format!(
        "[routing]\ntime_budget = \"1s\"\n{}",
        custom(&mock, "")
    ))
    .await;
    let answer = tokio::time::timeout(Duration::from_secs(30), t.chat(stream_ask())).await;
    let resp = answer.expect("the request is held past its time budget");
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("time budget"), "{msg}");
}

#[tokio::test]
async fn a_stream_that_only_sends_comments_after_content_is_stalled() {
    let mock = Mock::start().await;
    mock.on(|r, _| {
        let mut pieces = vec![Piece::Raw(chunk(&r.model(), "hello"))];
        for _ in 0..3_000 {
            pieces.push(Piece::Raw(": ping\n\n".into()));
            pieces.push(Piece::Sleep(Duration::from_millis(100)));
        }
        Reply::Stream(pieces)
    });
    let t = TestApp::spawn(&format!(
        "[routing]\nstall_timeout = \"1s\"\n{}",
        custom(&mock, "")
    ))
    .await;
    let resp = t.chat(stream_ask()).await;
    assert_eq!(resp.status(), 200);
    let events = tokio::time::timeout(Duration::from_secs(30), sse_data(resp))
        .await
        .expect("comments keep the stream open forever");
    assert_eq!(sse_text(&events), "hello");
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "stream_interrupted");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no content"),
        "{err}"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn malformed_messages_are_refused_before_any_upstream_call() {
    let mock = Mock::start().await;
    let t = TestApp::spawn(&custom(&mock, "")).await;
    let cases = [
        (
            json!([{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [1]}]),
            "messages[1].tool_calls[0]",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].id",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"arguments": "{}"}}]}]),
            "messages[0].tool_calls[0].function.name",
        ),
        (
            json!([{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": 7}}]}]),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            json!([{"role": "assistant", "tool_calls": {"id": "c1"}}]),
            "messages[0].tool_calls",
        ),
        (
            json!([{"role": "tool", "tool_call_id": 5, "content": "x"}]),
            "messages[0].tool_call_id",
        ),
        (
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": 7}]}]),
            "messages[0].content[0].image_url",
        ),
        (
            json!([{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
        ),
        (
            json!([{"role": "user", "content": [3]}]),
            "messages[0].content[0]",
        ),
    ];
    for (messages, field) in cases {
        let resp = t
            .chat(json!({"model": "mock-model", "messages": messages}))
            .await;
        assert_eq!(resp.status(), 400, "{messages}");
        let body: Value = resp.json().await.unwrap();
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{field}")), "{field}: {msg}");
    }
    assert_eq!(mock.chat_calls().len(), 0, "nothing reached the upstream");
}
