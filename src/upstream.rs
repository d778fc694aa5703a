//! The upstream HTTP client: hyper-util's pooled client over rustls (webpki roots, HTTP/2 when
//! the server offers it by ALPN), with `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`
//! honoured through CONNECT tunnels.
//!
//! Freeway first used reqwest here. Its per-request layers (the redirect policy re-parses the URL
//! even when redirects are off, proxy matching, header-map copies, a retry wrapper) were about a
//! sixth of the instructions of a whole proxied request (callgrind, see bench/README.md). This
//! client does only what the router needs: send a request whose body is one buffer, hand back
//! the response with its body still streaming, follow no redirect (a redirect could carry a key
//! header to another host), and never put a URL or a header value into an error message.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use anyhow::Context as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{
    Client as Pool,
    connect::{HttpConnector, proxy::Tunnel},
};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

/// An upstream answer's body, still streaming.
pub type Body = hyper::body::Incoming;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Headers whose values are credentials: marked sensitive (never indexed by HTTP/2 HPACK).
const SECRET_HEADERS: [&str; 4] = ["authorization", "x-goog-api-key", "x-api-key", "api-key"];

/// The shared, pooled upstream client (cheap to clone).
#[derive(Clone)]
pub struct Client {
    pool: Pool<HttpsConnector<Connector>, Full<Bytes>>,
    user_agent: HeaderValue,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made (refused, unreachable, TLS handshake, proxy, connect timeout).
    Connect,
    /// The connection broke or the answer was not HTTP; the text is free of URLs and keys.
    Other(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect => f.write_str("connection failed"),
            Error::Other(s) => write!(f, "request failed: {s}"),
        }
    }
}

impl Client {
    /// A client whose new connections give up after `connect_timeout`; proxies from the
    /// environment, read once.
    pub fn new(connect_timeout: Duration) -> anyhow::Result<Client> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let proxies = Matcher::from_env();
        let connector = Connector {
            http,
            proxies: Arc::new(proxies),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .context("cannot set up TLS")?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(connector);
        let pool = Pool::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Client {
            pool,
            user_agent: HeaderValue::from_static(concat!("freeway/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Send one request; resolves when the answer's status and headers have arrived.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<Response<Body>, Error> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        let map = req.headers_mut();
        map.reserve(headers.len() + 1);
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Other(format!("invalid header name {name:?}")))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                // Never the value: it may be a key.
                Error::Other(format!("invalid value for header {name}"))
            })?;
            if SECRET_HEADERS.contains(&name.as_str()) {
                value.set_sensitive(true);
            }
            map.append(name, value);
        }
        if !map.contains_key(header::USER_AGENT) {
            map.insert(header::USER_AGENT, self.user_agent.clone());
        }
        self.pool.request(req).await.map_err(|e| {
            if e.is_connect() {
                Error::Connect
            } else {
                Error::Other(describe(&e))
            }
        })
    }
}

/// The innermost cause of a failed request, scrubbed of anything key-like.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    crate::error::scrub(&inner.to_string())
}

/// The next chunk of an answer's body: `None` at its end; trailers are skipped.
pub async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
            Err(e) => return Some(Err(Error::Other(describe(&e)))),
        }
    }
}

/// A whole answer body, at most `max` bytes, each chunk within `stall`.
pub async fn read_limited(
    resp: Response<Body>,
    stall: Duration,
    max: usize,
) -> Result<Bytes, String> {
    // A small answer usually arrives as one chunk: keep it as is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut more = bytes::BytesMut::new();
    let mut body = resp.into_body();
    loop {
        match tokio::time::timeout(stall, next_chunk(&mut body)).await {
            Err(_) => return Err(format!("the answer stalled for {}s", stall.as_secs())),
            Ok(None) => {
                return Ok(match first {
                    Some(b) if more.is_empty() => b,
                    _ => more.freeze(),
                });
            }
            Ok(Some(Err(e))) => return Err(format!("the answer was cut ({e})")),
            Ok(Some(Ok(chunk))) => {
                let len = first.as_ref().map_or(0, Bytes::len) + more.len() + chunk.len();
                if len > max {
                    return Err("the answer is too large".into());
                }
                match first.take() {
                    None if more.is_empty() => first = Some(chunk),
                    Some(b) => {
                        more.extend_from_slice(&b);
                        more.extend_from_slice(&chunk);
                    }
                    None => more.extend_from_slice(&chunk),
                }
            }
        }
    }
}

/// Plain TCP, or a CONNECT tunnel through the proxy the environment names for the destination.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    proxies: Arc<Matcher>,
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let Some(proxy) = self.proxies.intercept(&dst) else {
            return Box::pin(async move { http.call(dst).await.map_err(Into::into) });
        };
        if proxy.uri().scheme_str() != Some("http") {
            return Box::pin(async {
                Err("only http:// proxies are supported (HTTPS_PROXY / HTTP_PROXY)".into())
            });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
    }
}
