//! Upstream dialects: how a canonical request goes out and how an answer comes back.
//!
//! `openai` covers every OpenAI-compatible vendor (their differences are catalog data);
//! `gemini` translates Google's native API. Each builds its request body, reads a whole answer
//! into an [`Answer`] and a streamed one, event by event, into [`Piece`]s; `classify` reads a
//! failure. Nothing here knows a client surface, and nothing does I/O: [`Dialects`] holds the
//! little state the dialects keep between requests (Gemini's thought signatures, the host a
//! multi-host provider's key belongs to, parsed URLs).

pub mod classify;
pub mod embed;
pub mod gemini;
pub mod openai;

pub use classify::{Failure, classify};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::{AuthStyle, Dialect, Model, Provider};
use crate::chat::{self, Answer, Event, Piece, Usage};
use crate::error::scrub;
use crate::keys::ProviderKey;
use crate::sse;

/// A request ready to send. Its `Debug` names the headers but never their values (one holds
/// the key).
pub struct Outgoing {
    /// The host it goes to, one of [`Dialects::hosts`].
    pub host: String,
    pub url: String,
    /// Header name and value; values may hold the key, so this type is never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Reads what comes back, in this dialect.
    pub reader: Reader,
}

/// One request to an upstream: which model, through which key, how.
#[derive(Clone, Copy)]
pub struct Call<'a> {
    pub provider: &'a Provider,
    pub model: &'a Model,
    pub key: &'a ProviderKey,
    /// Streamed.
    pub stream: bool,
    /// Makes the ids a dialect has to invent unique (the request id).
    pub seed: &'a str,
}

/// Reads an upstream's answer to one request in its dialect: whole, or as a stream decoder.
/// Handed back with the request, so the router never asks the dialect again.
pub enum Reader {
    Openai,
    Gemini {
        /// Makes the ids the dialect has to invent unique (the request id).
        seed: String,
        /// The upstream model id, for the answer's `model`.
        model: String,
        /// Where thought signatures of tool calls are remembered.
        signatures: Arc<gemini::Signatures>,
    },
}

impl Reader {
    /// Read a whole 200 answer: the answer and the usage it reports.
    pub fn answer(&self, body: Bytes) -> Result<(Answer, Option<Usage>), Failure> {
        match self {
            Reader::Openai => openai::read_answer(body),
            Reader::Gemini {
                seed,
                model,
                signatures,
            } => {
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|e| Failure::BadAnswer(format!("not JSON ({e})")))?;
                let m = gemini::from_upstream(&v, seed, model).map_err(|e| {
                    classify::error_in_answer(&body)
                        .unwrap_or_else(|| Failure::BadAnswer(scrub(&e.0)))
                })?;
                for c in &m.calls {
                    signatures.remember(&c.id, c.extra.as_ref());
                }
                let usage = m.usage;
                Ok((Answer::Typed(m), usage))
            }
        }
    }

    /// The decoder of a streamed answer.
    pub fn stream(self) -> Decoder {
        match self {
            Reader::Openai => Decoder::Openai(openai::Stream::default()),
            Reader::Gemini {
                seed, signatures, ..
            } => Decoder::Gemini {
                stream: gemini::Stream::new(&seed),
                signatures,
            },
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Outgoing")
            .field("host", &self.host)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// Called when a key turns out to belong to a host other than its provider's default, to make
/// the choice last (the store, for keys kept there).
pub type HostSink = Box<dyn Fn(&ProviderKey, &str) + Send + Sync>;

/// What the dialects remember between requests.
pub struct Dialects {
    /// Gemini thought signatures by tool-call id.
    signatures: Arc<gemini::Signatures>,
    /// Hosts learned for keys of providers with several (Z.ai), by key id.
    hosts: Mutex<FxHashMap<String, String>>,
    remember_host: HostSink,
    /// Parsed upstream URLs: parsing showed up in profiles when done per request.
    urls: RwLock<FxHashMap<String, http::Uri>>,
}

impl Dialects {
    pub fn new(remember_host: HostSink) -> Dialects {
        Dialects {
            signatures: Arc::default(),
            hosts: Mutex::default(),
            remember_host,
            urls: RwLock::default(),
        }
    }

    /// The host a key is known to belong to.
    pub fn known_host(&self, key: &ProviderKey) -> Option<String> {
        key.base_url.clone().or_else(|| {
            self.hosts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key.id)
                .cloned()
        })
    }

    /// The hosts to try for a key, in order: the one it is known to belong to, else the
    /// provider's and its alternates.
    pub fn hosts(&self, provider: &Provider, key: &ProviderKey) -> Vec<String> {
        match self.known_host(key) {
            Some(url) => vec![url],
            None => std::iter::once(provider.base_url.clone())
                .chain(provider.quirks.alt_base_urls.iter().cloned())
                .collect(),
        }
    }

    /// A key was accepted on `base`: remember it if its provider has several hosts.
    pub fn worked_on(&self, provider: &Provider, key: &ProviderKey, base: &str) {
        if provider.quirks.alt_base_urls.is_empty() || key.base_url.is_some() {
            return;
        }
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if hosts.get(&key.id).map(String::as_str) == Some(base) {
            return;
        }
        hosts.insert(key.id.clone(), base.to_string());
        drop(hosts);
        (self.remember_host)(key, base);
    }

    /// The upstream body of `req` for `model`: the same for every key and host of the model,
    /// so it is built once per model a request tries. An error is the client's request that
    /// this dialect cannot express.
    pub fn body(
        &self,
        provider: &Provider,
        model: &Model,
        req: &chat::Request,
        lessons: Option<&crate::lessons::Lessons>,
    ) -> Result<Bytes, String> {
        match provider.dialect {
            Dialect::Openai => Ok(openai::body(req, provider, model, lessons).into()),
            Dialect::Gemini => {
                let body = Value::Object(req.to_map());
                let lookup = |id: &str| self.signatures.get(id);
                let translated = gemini::to_upstream(&body, &lookup).map_err(|e| e.0)?;
                Ok(serde_json::to_vec(&translated).unwrap_or_default().into())
            }
        }
    }

    /// The request that sends `body` (from [`Dialects::body`]) for `call` to the host `base`,
    /// with the reader of its answer.
    pub fn build(&self, call: &Call, base: &str, body: Bytes) -> Outgoing {
        let Call {
            provider,
            model,
            key,
            stream,
            seed,
        } = *call;
        let host = base.to_string();
        let (base, mut headers) = credentials(provider, key.secret.expose(), base);
        headers.push(("content-type", "application/json".into()));
        for (name, value) in &provider.quirks.headers {
            // Catalog header names are static data; leak-free lookup by known names.
            if let Some(n) = static_header(name) {
                headers.push((n, value.clone()));
            }
        }
        let url = match provider.dialect {
            Dialect::Openai => format!("{base}/chat/completions"),
            Dialect::Gemini => format!("{base}/{}", gemini::path(&model.id, stream)),
        };
        Outgoing {
            host,
            url,
            headers,
            body,
            reader: self.reader(provider, model, seed),
        }
    }

    /// The reader of `model`'s answers; `seed` makes the ids a dialect invents unique.
    pub fn reader(&self, provider: &Provider, model: &Model, seed: &str) -> Reader {
        match provider.dialect {
            Dialect::Openai => Reader::Openai,
            Dialect::Gemini => Reader::Gemini {
                seed: seed.to_string(),
                model: model.id.clone(),
                signatures: Arc::clone(&self.signatures),
            },
        }
    }

    /// `text` parsed as an upstream URL, from a cache (a few entries per provider at most;
    /// cleared if a misconfiguration ever makes it grow).
    pub fn url(&self, text: &str) -> Result<http::Uri, String> {
        if let Some(u) = self
            .urls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(text)
        {
            return Ok(u.clone());
        }
        let parsed = parse_url(text)?;
        let mut urls = self.urls.write().unwrap_or_else(|e| e.into_inner());
        if urls.len() > 1024 {
            urls.clear();
        }
        urls.insert(text.to_string(), parsed.clone());
        Ok(parsed)
    }
}

/// The URL base and auth headers for a key: `account_id:token` keys (Cloudflare) put the
/// account into the URL; the token travels in the header the provider wants, never in the URL.
pub fn credentials(
    provider: &Provider,
    key: &str,
    base: &str,
) -> (String, Vec<(&'static str, String)>) {
    let (base, token) = if provider.quirks.account_in_url {
        let (account, token) = key.split_once(':').unwrap_or(("", key));
        (base.replace("{account_id}", account), token)
    } else {
        (base.to_string(), key)
    };
    let mut headers = Vec::with_capacity(4);
    if !token.is_empty() {
        match provider.auth {
            AuthStyle::Bearer => headers.push(("authorization", format!("Bearer {token}"))),
            AuthStyle::Goog => headers.push(("x-goog-api-key", token.to_string())),
            AuthStyle::None => {}
        }
    }
    (base, headers)
}

fn static_header(name: &str) -> Option<&'static str> {
    const KNOWN: &[&str] = &["HTTP-Referer", "X-Title", "User-Agent"];
    KNOWN.iter().find(|k| k.eq_ignore_ascii_case(name)).copied()
}

/// An upstream URL: absolute, `http` or `https`, with a host.
fn parse_url(text: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = text
        .parse()
        .map_err(|e: http::uri::InvalidUri| e.to_string())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("the URL must start with http:// or https://".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(uri)
}

/// What one upstream stream event meant.
#[derive(Debug, Default)]
pub struct Decoded {
    /// What to hand on to the client's surface.
    pub piece: Option<Piece>,
    /// Some text, tool call or reasoning was in it.
    pub content: bool,
    /// A finish reason has been seen.
    pub finished: bool,
    /// The upstream said the stream is over (`[DONE]`).
    pub done: bool,
    /// The upstream reported an error inside the stream (scrubbed).
    pub error: Option<String>,
}

/// Reads one streamed answer, per dialect; keeps the usage.
pub enum Decoder {
    Openai(openai::Stream),
    Gemini {
        stream: gemini::Stream,
        signatures: Arc<gemini::Signatures>,
    },
}

impl Decoder {
    pub fn on_event(&mut self, ev: sse::Event) -> Decoded {
        match self {
            Decoder::Openai(s) => s.on_event(ev.data),
            Decoder::Gemini { stream, signatures } => match stream.on_event(&ev.data) {
                Ok(events) => {
                    for e in &events {
                        if let Event::ToolCall(c) = e {
                            if let Some(id) = &c.id {
                                signatures.remember(id, c.extra.as_ref());
                            }
                        }
                    }
                    Decoded {
                        content: events.iter().any(Event::is_content),
                        finished: stream.finished(),
                        piece: (!events.is_empty()).then_some(Piece::Events(events)),
                        ..Decoded::default()
                    }
                }
                Err(e) => Decoded {
                    error: Some(scrub(&e.0)),
                    ..Decoded::default()
                },
            },
        }
    }

    /// Usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Decoder::Openai(s) => s.usage(),
            Decoder::Gemini { stream, .. } => stream.usage(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_outgoing_request_never_prints_its_credentials() {
        let o = super::Outgoing {
            host: "h".into(),
            url: "http://h/v1/chat/completions".into(),
            headers: vec![("authorization", "Bearer gsk_secret0123456789abcdef".into())],
            body: bytes::Bytes::from_static(b"{}"),
            reader: super::Reader::Openai,
        };
        let printed = format!("{o:?} {o:#?}");
        assert!(!printed.contains("gsk_secret"), "{printed}");
        assert!(printed.contains("authorization"), "{printed}");
    }

    #[test]
    fn upstream_urls_must_be_absolute_http_with_a_host() {
        for good in [
            "https://api.groq.com/openai/v1/chat/completions",
            "http://127.0.0.1:8080/v1/chat/completions",
        ] {
            assert!(super::parse_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://x/y",
            "/v1/chat",
            "https://",
            "http://exa mple.com/",
            "",
        ] {
            assert!(super::parse_url(bad).is_err(), "{bad}");
        }
    }
}
