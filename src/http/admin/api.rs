//! The admin JSON API (SPEC 6.2): sessions, provider keys, client keys, the chain. Every
//! handler is a thin shell over `ops` (the CLI's operations) or `crate::admin`.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use super::{Error, blocking, json_body, require, rfc3339, session_cookie};
use crate::http::Server;
use crate::ops::{ChainEntry, KeyView};

fn key_json(k: &KeyView) -> Value {
    json!({
        "id": k.id,
        "provider": k.provider,
        "label": k.label,
        "masked": k.masked,
        "enabled": k.enabled,
        "source": k.source.as_str(),
        "status": k.status.as_str(),
        "last_checked_at": rfc3339(k.last_checked_ms),
        "last_error": k.last_error,
        "cooldowns": k.cooldowns.iter().map(|(model, until, reason)| json!({
            "model": model,
            "until": rfc3339(Some(*until)),
            "reason": reason,
        })).collect::<Vec<_>>(),
    })
}

pub fn chain_json(e: &ChainEntry) -> Value {
    json!({
        "position": e.position,
        "provider": e.provider,
        "model": e.model,
        "canonical": e.canonical,
        "rank": e.rank,
        "enabled": e.enabled,
        "limits": {"rpm": e.limits.rpm, "rpd": e.limits.rpd, "tpm": e.limits.tpm, "tpd": e.limits.tpd},
        "keys": e.keys,
        "used_today": {"requests": e.requests_today, "tokens": e.tokens_today},
        "paced": e.paced,
        "available": e.available,
        "frees_at": rfc3339(e.frees_at_ms),
        "learned": e.learned.iter().map(|(lesson, why)| json!({"lesson": lesson, "reason": why})).collect::<Vec<_>>(),
        "benched_until": rfc3339(e.benched.as_ref().map(|(until, _)| *until)),
    })
}

pub async fn session(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let s = require(&server, &headers, false).await?;
    Ok(axum::Json(json!({"csrf_token": s.csrf})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    token: String,
    password: String,
}

pub async fn setup(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let b: SetupBody = json_body(&server, body).await?;
    let admin = Arc::clone(&server.admin);
    let s = crate::offload::hash(move || admin.setup(&b.token, &b.password)).await??;
    Ok(with_session(s, &headers))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    password: String,
}

pub async fn login(State(server): State<Arc<Server>>, req: Request) -> Result<Response, Error> {
    let from = super::peer(req.extensions());
    let headers = req.headers().clone();
    let b: LoginBody = json_body(&server, req.into_body()).await?;
    // A slowed-down address is answered without taking a turn to hash.
    if let Some(wait) = server.admin.slowed(from) {
        return Err(Error::SlowDown(wait));
    }
    let admin = Arc::clone(&server.admin);
    let s = crate::offload::hash(move || admin.login(from, &b.password)).await??;
    Ok(with_session(s, &headers))
}

/// A new session: its cookie, and the CSRF token in the body.
fn with_session(s: crate::admin::Session, headers: &HeaderMap) -> Response {
    let mut resp = axum::Json(json!({"csrf_token": s.csrf})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(s.token.as_deref(), headers),
    );
    resp
}

pub async fn logout(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let s = require(&server, &headers, true).await?;
    let admin = Arc::clone(&server.admin);
    blocking(move || Ok(admin.logout(&s)?)).await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(None, &headers));
    Ok(resp)
}

pub async fn keys(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, false).await?;
    let ops = Arc::clone(&server.ops);
    let keys = blocking(move || Ok(ops.keys()?)).await?;
    let keys: Vec<Value> = keys.iter().map(key_json).collect();
    Ok(axum::Json(json!({"keys": keys})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    provider: String,
    key: String,
    #[serde(default)]
    label: Option<String>,
}

pub async fn add_key(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: NewKey = json_body(&server, body).await?;
    let ops = Arc::clone(&server.ops);
    let k = blocking(move || Ok(ops.add_key(&b.provider, &b.key, b.label.as_deref())?)).await?;
    Ok((StatusCode::CREATED, axum::Json(key_json(&k))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportBody {
    text: String,
}

pub async fn import_keys(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: ImportBody = json_body(&server, body).await?;
    let ops = Arc::clone(&server.ops);
    let done = blocking(move || Ok(ops.import_env(&b.text)?)).await?;
    Ok(axum::Json(json!({
        "added": done.added.iter().map(key_json).collect::<Vec<_>>(),
        "skipped": done.skipped.iter().map(|(line, reason)| json!({"line": line, "reason": reason})).collect::<Vec<_>>(),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    label: Option<String>,
}

pub async fn patch_key(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: KeyPatch = json_body(&server, body).await?;
    if b.enabled.is_none() && b.label.is_none() {
        return Err(Error::Invalid(
            "send `enabled` (a boolean) or `label` (a string)".into(),
        ));
    }
    let ops = Arc::clone(&server.ops);
    let k = blocking(move || {
        let mut k = ops.key(&id)?;
        if let Some(label) = &b.label {
            k = ops.set_key_label(&k.id, label)?;
        }
        if let Some(enabled) = b.enabled {
            k = ops.set_key_enabled(&k.id, enabled)?;
        }
        Ok(k)
    })
    .await?;
    Ok(axum::Json(key_json(&k)).into_response())
}

pub async fn delete_key(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let ops = Arc::clone(&server.ops);
    blocking(move || Ok(ops.remove_key(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn check_key(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let ops = Arc::clone(&server.ops);
    let k = blocking(move || Ok(ops.key(&id)?)).await?;
    crate::ops::Ops::check(&server.ops, Some(&k.id)).await?;
    let ops = Arc::clone(&server.ops);
    let k = blocking(move || Ok(ops.key(&k.id)?)).await?;
    Ok(axum::Json(key_json(&k)).into_response())
}

pub async fn clear_cooldowns(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let ops = Arc::clone(&server.ops);
    blocking(move || Ok(ops.clear_cooldowns(&id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn client_keys(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, false).await?;
    let ops = Arc::clone(&server.ops);
    let keys = blocking(move || Ok(ops.client_keys()?)).await?;
    let keys: Vec<Value> = keys
        .iter()
        .filter(|k| !k.revoked)
        .map(client_key_json)
        .collect();
    Ok(axum::Json(json!({"client_keys": keys})).into_response())
}

/// A client key as the API shows it: never the key; its limits and its use of them.
fn client_key_json(k: &crate::ops::ClientKeyView) -> Value {
    let l = &k.limits;
    let u = &k.usage;
    json!({
        "name": k.name,
        "prefix": k.prefix,
        "source": if k.id.is_some() { "stored" } else { "config" },
        "created_at": rfc3339(k.created_ms),
        "last_used_at": rfc3339(k.last_used_ms),
        "limits": {
            "rpm": l.rpm, "rpd": l.rpd, "tpd": l.tpd, "tpmo": l.tpmo,
            "concurrent": l.concurrent, "models": l.models,
            "expires": rfc3339(l.expires_ms), "weight": l.weight(),
            "source": if k.limits_from_config { "config" } else { "stored" },
        },
        "used": {
            "minute_requests": u.minute_requests,
            "day_requests": u.day_requests,
            "day_tokens": u.day_tokens,
            "month_tokens": u.month_tokens,
            "day_resets_at": rfc3339(Some(u.day_resets_ms)),
            "month_resets_at": rfc3339(Some(u.month_resets_ms)),
        },
    })
}

/// A present field that may be `null`: `Some(None)` clears, a missing field stays `None`.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Limits in a request body: each field a value, `null` (no limit), or left out (unchanged).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    #[serde(default, deserialize_with = "present")]
    rpm: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    rpd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    tpd: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    tpmo: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    concurrent: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    expires: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    weight: Option<Option<u32>>,
}

impl LimitsBody {
    fn patch(self) -> Result<crate::ops::LimitsPatch, Error> {
        let expires_ms = match self.expires {
            None => None,
            Some(None) => Some(None),
            Some(Some(t)) if t.trim().is_empty() => Some(None),
            Some(Some(t)) => Some(Some(
                crate::config::parse_expiry(&t)
                    .map_err(|e| Error::Invalid(format!("expires: {e}")))?,
            )),
        };
        Ok(crate::ops::LimitsPatch {
            rpm: self.rpm,
            rpd: self.rpd,
            tpd: self.tpd,
            tpmo: self.tpmo,
            concurrent: self.concurrent,
            models: self.models.map(Option::unwrap_or_default),
            expires_ms,
            weight: self.weight,
        })
    }
}

pub async fn create_client_key(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    // `{"name", …limits}`: the name, and optionally the limits of a PATCH.
    let mut b: serde_json::Map<String, Value> = json_body(&server, body).await?;
    let Some(Value::String(name)) = b.remove("name") else {
        return Err(Error::Invalid("send the key's `name` (a string)".into()));
    };
    let limits: LimitsBody = serde_json::from_value(Value::Object(b))
        .map_err(|e| Error::Invalid(format!("the request body is not the JSON expected: {e}")))?;
    let patch = limits.patch()?;
    let ops = Arc::clone(&server.ops);
    let trimmed = name.trim().to_string();
    let key = blocking(move || Ok(ops.create_client_key_with(&name, &patch)?)).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"name": trimmed, "key": key})),
    )
        .into_response())
}

/// `PATCH /admin/api/client-keys/{name}`: change its limits (SPEC 3.8).
pub async fn patch_client_key(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: LimitsBody = json_body(&server, body).await?;
    let patch = b.patch()?;
    if patch.is_empty() {
        return Err(Error::Invalid(
            "send the limits to change: rpm, rpd, tpd, tpmo, concurrent, models, expires, weight (null clears one)".into(),
        ));
    }
    let ops = Arc::clone(&server.ops);
    let k = blocking(move || Ok(ops.set_client_limits(&name, &patch)?)).await?;
    Ok(axum::Json(client_key_json(&k)).into_response())
}

pub async fn revoke_client_key(
    State(server): State<Arc<Server>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let ops = Arc::clone(&server.ops);
    blocking(move || Ok(ops.revoke_client_key(&name)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn chain(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    require(&server, &headers, false).await?;
    let ops = Arc::clone(&server.ops);
    let chain = blocking(move || Ok(ops.chain())).await?;
    let chain: Vec<Value> = chain.iter().map(chain_json).collect();
    Ok(axum::Json(json!({"chain": chain})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    order: Vec<String>,
}

pub async fn reorder_chain(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: Order = json_body(&server, body).await?;
    let ops = Arc::clone(&server.ops);
    blocking(move || Ok(ops.reorder(&b.order)?)).await?;
    chain(State(server), headers).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    model: String,
    enabled: bool,
}

pub async fn switch_model(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    let b: Switch = json_body(&server, body).await?;
    let ops = Arc::clone(&server.ops);
    blocking(move || Ok(ops.set_model_enabled(&b.model, b.enabled)?)).await?;
    chain(State(server), headers).await
}

pub async fn no_route(req: Request) -> Error {
    Error::NotFound(format!(
        "no admin route {} {}; see SPEC 6.2 for the routes",
        req.method(),
        req.uri().path()
    ))
}

fn figures_json(f: &crate::analytics::Figures) -> Value {
    let r = &f.rollup;
    json!({
        "requests": r.requests,
        "succeeded": r.succeeded,
        "failed": r.failed,
        "cancelled": r.cancelled,
        "success_rate": f.success_rate(),
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "latency_ms": {"p50": r.latency.quantile(0.5), "p95": r.latency.quantile(0.95)},
        "ttft_ms": {"p50": r.ttft.quantile(0.5), "p95": r.ttft.quantile(0.95)},
        "failed_attempts": r.failed_attempts,
    })
}

/// A breakdown row: the figures with what they are of (`null`: requests no provider served).
fn row_json(key: &str, name: &str, f: &crate::analytics::Figures) -> Value {
    let mut v = figures_json(f);
    if let Some(o) = v.as_object_mut() {
        let name = if name.is_empty() {
            Value::Null
        } else {
            json!(name)
        };
        o.insert(key.into(), name);
    }
    v
}

pub fn report_json(r: &crate::analytics::Report) -> Value {
    json!({
        "window": r.window.as_str(),
        "totals": figures_json(&r.totals),
        "by_provider": r.by_provider.iter().map(|(p, f)| row_json("provider", p, f)).collect::<Vec<_>>(),
        "by_model": r.by_model.iter().map(|(m, f)| row_json("model", m, f)).collect::<Vec<_>>(),
        "by_client": r.by_client.iter().map(|(c, f)| row_json("client", c, f)).collect::<Vec<_>>(),
        "client": r.client,
        "series": r.series.iter().map(|s| json!({
            "start": rfc3339(Some(s.start)),
            "requests": s.requests,
            "failed": s.failed,
            "tokens_in": s.tokens_in,
            "tokens_out": s.tokens_out,
        })).collect::<Vec<_>>(),
    })
}

pub async fn analytics(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response, Error> {
    require(&server, &headers, false).await?;
    let window = q.get("window").cloned().unwrap_or_else(|| "24h".into());
    let client = q.get("client").cloned().filter(|c| !c.is_empty());
    let ops = Arc::clone(&server.ops);
    let report = blocking(move || Ok(ops.analytics_of(&window, client.as_deref())?)).await?;
    Ok(axum::Json(report_json(&report)).into_response())
}

pub fn request_json(r: &crate::record::RequestRow) -> Value {
    json!({
        "id": r.id,
        "at": rfc3339(Some(r.at_ms)),
        "model_requested": r.requested_model,
        "routed_via": r.served_by,
        "status": r.status,
        "stream": r.stream,
        "surface": r.surface,
        "notes": r.notes,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "tokens_in": r.tokens_in,
        "tokens_out": r.tokens_out,
        "error": r.error,
        "attempts": r.attempts.iter().map(|a| {
            let (provider, model) = a.target.split_once('/').unwrap_or(("", a.target.as_str()));
            json!({
                "provider": provider,
                "model": model,
                "key": a.key_id,
                "outcome": a.outcome,
                "status": a.status,
                "duration_ms": a.latency_ms,
                "error": a.error,
            })
        }).collect::<Vec<_>>(),
    })
}

/// The most requests one page lists.
const MAX_PAGE: usize = 500;

pub async fn requests(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Response, Error> {
    require(&server, &headers, false).await?;
    let limit = match q.get("limit") {
        None => 50,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                Error::Invalid(format!("limit must be a number from 1 to {MAX_PAGE}"))
            })?,
    };
    let before = q.get("before").cloned();
    let ops = Arc::clone(&server.ops);
    let rows = blocking(move || Ok(ops.requests(before.as_deref(), limit)?)).await?;
    let list: Vec<Value> = rows.iter().map(request_json).collect();
    Ok(axum::Json(json!({"requests": list})).into_response())
}

/// The Playground's chat: a chat-completions body answered exactly as `/v1/chat/completions`
/// answers it, routed like any request, logged as the dashboard's.
pub async fn playground(
    State(server): State<Arc<Server>>,
    axum::Extension(crate::http::RequestId(request_id)): axum::Extension<crate::http::RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    require(&server, &headers, true).await?;
    Ok(crate::http::chat_as(
        &server,
        crate::keys::Client::unlimited("dashboard"),
        request_id,
        &headers,
        body,
    )
    .await)
}
