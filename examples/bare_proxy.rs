//! The floor under Freeway's benchmark figures: the least a proxy on this machine can add.
//!
//! ```text
//! cargo run --release --example bare_proxy -- MODE UPSTREAM_HOST:PORT
//! ```
//!
//! Prints `listening on 127.0.0.1:PORT` as its first stdout line. Every mode runs on one
//! single-threaded tokio runtime, as Freeway does by default, and does no work of its own:
//!
//! * `relay`: copies bytes between the client and a new upstream TCP connection (no HTTP);
//! * `hyper`: an HTTP/1 server whose handler reads the request body and sends it on with
//!   hyper-util's pooled client (the client Freeway uses), streaming the answer back;
//! * `hyper-conn`: the same, but every client connection owns one upstream connection driven
//!   by the client connection's own task (no pool, no connection task).
//!
//! `bench/floor.sh` measures these next to Freeway and the mock upstream, interleaved.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, upstream] = args.as_slice() else {
        eprintln!("usage: bare_proxy relay|hyper|hyper-conn UPSTREAM_HOST:PORT");
        std::process::exit(2);
    };
    if !["relay", "hyper", "hyper-conn"].contains(&mode.as_str()) {
        eprintln!("unknown mode {mode:?}: relay, hyper or hyper-conn");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(serve(mode.clone(), Arc::from(upstream.as_str())));
}

async fn serve(mode: String, upstream: Arc<str>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("address"));
    let pooled = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let upstream = upstream.clone();
        let pooled = pooled.clone();
        let mode = mode.clone();
        tokio::spawn(async move {
            let _ = match mode.as_str() {
                "relay" => relay(client, &upstream).await,
                "hyper" => pooled_proxy(client, upstream, pooled).await,
                _ => own_connection_proxy(client, &upstream).await,
            };
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn relay(mut client: TcpStream, upstream: &str) -> Result<(), BoxError> {
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}

/// The client's request, to be sent upstream: same method, path and body, `Host` set. The URI
/// is absolute for hyper-util's pooled client (it picks the connection by it) and in origin
/// form for an own connection.
async fn forward(
    req: Request<Incoming>,
    host: &str,
    absolute: bool,
) -> Result<Request<Full<Bytes>>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = if absolute {
        format!("http://{host}{path}").parse()?
    } else {
        path.parse()?
    };
    out.headers_mut().insert(hyper::header::HOST, host.parse()?);
    if let Some(ct) = parts.headers.get(hyper::header::CONTENT_TYPE) {
        out.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}

fn bad_gateway<B: Default>() -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}

async fn pooled_proxy(
    client: TcpStream,
    upstream: Arc<str>,
    pooled: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
) -> Result<(), BoxError> {
    let svc = service_fn(move |req: Request<Incoming>| {
        let pooled = pooled.clone();
        let upstream = upstream.clone();
        async move {
            let resp = match forward(req, &upstream, true).await {
                Ok(out) => pooled.request(out).await.ok(),
                Err(_) => None,
            };
            Ok::<_, Infallible>(match resp {
                Some(resp) => resp.map(|b| b.boxed()),
                None => bad_gateway(),
            })
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), svc)
        .await?;
    Ok(())
}

async fn own_connection_proxy(client: TcpStream, upstream: &str) -> Result<(), BoxError> {
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(up)).await?;
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let host: Arc<str> = Arc::from(upstream);
    let svc = service_fn(move |req: Request<Incoming>| {
        let send = send.clone();
        let host = host.clone();
        async move {
            let mut resp = None;
            if let Ok(out) = forward(req, &host, false).await {
                let mut send = send.lock().await;
                if send.ready().await.is_ok() {
                    resp = send.send_request(out).await.ok();
                }
            }
            Ok::<_, Infallible>(match resp {
                Some(resp) => resp.map(|b| b.boxed()),
                None => bad_gateway(),
            })
        }
    });
    let server =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(client), svc);
    // Both connections are polled by this one task.
    let mut server = pin!(server);
    let mut conn = pin!(conn);
    let mut upstream_open = true;
    std::future::poll_fn(|cx| {
        if upstream_open && conn.as_mut().poll(cx).is_ready() {
            upstream_open = false;
        }
        let r = server.as_mut().poll(cx);
        if upstream_open && conn.as_mut().poll(cx).is_ready() {
            upstream_open = false;
        }
        r
    })
    .await?;
    Ok(())
}
