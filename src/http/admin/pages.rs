//! The admin pages (SPEC 6.3), rendered on the server (maud escapes everything it writes) with
//! one small script and one stylesheet, both embedded in the binary.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use std::collections::HashMap;
use std::sync::Arc;

use super::{Error, blocking, session_of};
use crate::admin::Session;
use crate::http::Server;
use crate::keys::Status;
use crate::ops::{ChainEntry, KeySource, KeyView, fmt_time};

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

/// The pages a logged-in person moves between.
const NAV: &[(&str, &str)] = &[
    ("/admin/keys", "Keys"),
    ("/admin/chain", "Chain"),
    ("/admin/analytics", "Analytics"),
    ("/admin/playground", "Playground"),
];

fn layout(title: &str, here: &str, csrf: Option<&str>, body: Markup) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(c) = csrf { meta name="csrf-token" content=(c); }
                title { (title) " · Freeway" }
                link rel="stylesheet" href="/admin/static/app.css";
                script src="/admin/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/admin/keys" { "Freeway" }
                    @if csrf.is_some() {
                        nav aria-label="Admin pages" {
                            @for (href, name) in NAV {
                                @if *href == here {
                                    a href=(href) aria-current="page" { (name) }
                                } @else {
                                    a href=(href) { (name) }
                                }
                            }
                        }
                        button type="button" data-act="logout" { "Log out" }
                    }
                }
                main #main tabindex="-1" {
                    div #notice .notice role="alert" tabindex="-1" hidden {}
                    (body)
                }
            }
        }
    };
    let mut resp = (StatusCode::OK, page.into_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// A page for a logged-in admin: the session is checked and the page built off the event
/// loop (both read the store; rendering a month of analytics takes tens of milliseconds);
/// without a session, the login page.
async fn page(
    server: Arc<Server>,
    headers: HeaderMap,
    build: impl FnOnce(&Server, &Session) -> Result<Response, Error> + Send + 'static,
) -> Result<Response, Error> {
    let token = super::cookie(&headers);
    blocking(move || {
        let session = match token {
            Some(t) => server.admin.session(&t)?,
            None => None,
        };
        match session {
            Some(session) => build(&server, &session),
            None => needs_login(),
        }
    })
    .await
}

/// Where someone without a session goes: the login page (which, before any password exists,
/// points to the setup link).
fn needs_login() -> Result<Response, Error> {
    Ok(Redirect::to("/admin/login").into_response())
}

pub async fn home(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    match session_of(&server, &headers).await? {
        Some(_) => Ok(Redirect::to("/admin/keys").into_response()),
        None => needs_login(),
    }
}

pub async fn login(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if session_of(&server, &headers).await?.is_some() {
        return Ok(Redirect::to("/admin/keys").into_response());
    }
    let admin = Arc::clone(&server.admin);
    let body = if blocking(move || Ok(admin.needs_setup()?)).await? {
        html! {
            section.card.center {
                h1 { "Set up Freeway" }
                p { "No admin password is set yet. Open the setup link the server printed when it started "
                    "(it looks like " code { "http://…/admin/setup?token=…" } ")." }
                p.muted { "Lost it? Restart the server, or run " code { "freeway admin reset-password" }
                    ", and use the link it prints." }
            }
        }
    } else {
        html! {
            section.card.center {
                h1 { "Log in" }
                form.stack data-api="/admin/api/login" data-then="go:/admin/keys" {
                    label { "Admin password"
                        input type="password" name="password" required autocomplete="current-password" autofocus;
                    }
                    button.primary type="submit" { "Log in" }
                }
            }
        }
    };
    Ok(layout("Log in", "", None, body))
}

pub async fn setup(
    State(server): State<Arc<Server>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let admin = Arc::clone(&server.admin);
    let body = if !blocking(move || Ok(admin.needs_setup()?)).await? {
        html! {
            section.card.center {
                h1 { "Already set up" }
                p { "An admin password is set. " a href="/admin/login" { "Log in" } "." }
            }
        }
    } else {
        let token = q.get("token").cloned().unwrap_or_default();
        html! {
            section.card.center {
                h1 { "Choose the admin password" }
                p.lead { "It opens this dashboard. At least 10 characters." }
                form.stack data-api="/admin/api/setup" data-then="go:/admin/keys" {
                    input type="hidden" name="token" value=(token);
                    label { "Password"
                        input type="password" name="password" minlength="10" required autocomplete="new-password" autofocus;
                    }
                    label { "The same again"
                        input type="password" name="confirm" minlength="10" required autocomplete="new-password";
                    }
                    button.primary type="submit" { "Set password" }
                }
            }
        }
    };
    Ok(layout("Set up", "", None, body))
}

fn status_cell(status: Status) -> Markup {
    html! {
        span class={ "dot " (status.as_str()) } aria-hidden="true" {}
        (status.as_str())
    }
}

fn key_row(k: &KeyView, now: i64) -> Markup {
    let id = &k.id;
    let url = format!("/admin/api/keys/{id}");
    html! {
        tr {
            td data-label="Status" { (status_cell(k.status)) }
            td data-label="Key" {
                code { (k.masked) }
                @if k.source == KeySource::Config { " " span.pill { "config" } }
                @if !k.enabled { " " span.pill.off { "disabled" } }
            }
            td data-label="Label" { (k.label) }
            td data-label="Last check" {
                @match k.last_checked_ms {
                    Some(t) => { (fmt_time(t)) },
                    None => { span.muted { "never" } },
                }
                @if let Some(e) = &k.last_error { div.error-text { (e) } }
            }
            td data-label="Cooldowns" {
                @let active: Vec<_> = k.cooldowns.iter().filter(|(_, until, _)| *until > now).collect();
                @if active.is_empty() { span.muted { "none" } }
                @for (model, until, reason) in &active {
                    div {
                        (model.as_deref().unwrap_or("whole key")) " until " (fmt_time(*until))
                        div.muted { (reason) }
                    }
                }
                @if !active.is_empty() {
                    button.small type="button" data-act="call" data-method="DELETE"
                        data-url={ (url) "/cooldowns" } { "Clear" }
                }
            }
            td.actions data-label="Actions" {
                button.small type="button" data-act="call" data-method="POST" data-url={ (url) "/check" } { "Check now" }
                @if k.source == KeySource::Stored {
                    @if k.enabled {
                        button.small type="button" data-act="call" data-method="PATCH" data-url=(url)
                            data-body=r#"{"enabled":false}"# { "Disable" }
                    } @else {
                        button.small type="button" data-act="call" data-method="PATCH" data-url=(url)
                            data-body=r#"{"enabled":true}"# { "Enable" }
                    }
                    button.small.danger type="button" data-act="call" data-method="DELETE" data-url=(url)
                        data-confirm={ "Remove the " (k.provider) " key " (k.masked) "?" } { "Remove" }
                }
            }
        }
    }
}

pub async fn keys(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    page(server, headers, move |server, session| {
        let keys = server.ops.keys()?;
        let clients = server.ops.client_keys()?;
        let snap = server.ops.live().snapshot();
        let now = server.ops.ledger().now_ms();
        let providers = &snap.catalog.providers;
        let body = html! {
            h1 { "Provider keys" }
            @if keys.is_empty() {
                section.card.empty {
                    h2 { "Start here: add a provider key" }
                    p { "Freeway answers from the free tiers of the providers you hold keys for. Get a free key from "
                        "Groq, Google AI Studio, Cerebras, Mistral, OpenRouter or another provider below, paste it here, "
                        "and point your OpenAI client at this server's " code { "/v1" } "." }
                }
            }
            section.card #add-key {
                h2 { "Add a key" }
                form.row data-api="/admin/api/keys" {
                    label { "Provider"
                        select name="provider" required {
                            option value="" { "Choose…" }
                            @for p in providers {
                                option value=(p.id) {
                                    (p.name)
                                    @if !p.enabled { " (disabled in the config)" }
                                }
                            }
                        }
                    }
                    label { "Key"
                        input type="password" name="key" required autocomplete="off" spellcheck="false";
                    }
                    label { "Label (optional)" input type="text" name="label" autocomplete="off"; }
                    button.primary type="submit" { "Add key" }
                }
                details {
                    summary { "Import a .env file" }
                    p.muted { "One variable per key: " code { "GROQ_API_KEY=…" } ", " code { "GEMINI_API_KEY=…" }
                        "; add " code { "_2" } ", " code { "_3" } " for more keys of one provider." }
                    form data-api="/admin/api/keys/import" data-then="import" {
                        label { "Contents of the .env file"
                            textarea name="text" rows="6" required spellcheck="false" {}
                        }
                        button type="submit" { "Import" }
                    }
                    div #import-result hidden {}
                }
            }
            @for p in providers {
                @let mine: Vec<&KeyView> = keys.iter().filter(|k| k.provider == p.id).collect();
                @if !mine.is_empty() {
                    section.card {
                        h2 { (p.name) " " span.muted { (p.id) } }
                        div.table-wrap {
                            table.cards {
                                thead { tr { th { "Status" } th { "Key" } th { "Label" } th { "Last check" } th { "Cooldowns" } th { "Actions" } } }
                                tbody { @for k in &mine { (key_row(k, now)) } }
                            }
                        }
                    }
                }
            }
            section.card #client-keys {
                h2 { "Client keys" }
                p.muted { "What your apps send to Freeway as their API key (" code { "Authorization: Bearer …" } ")." }
                div.table-wrap {
                    table.cards {
                        thead { tr { th { "Name" } th { "Starts with" } th { "Limits" } th { "Created" } th { "Last used" } th { "Actions" } } }
                        tbody {
                            @for c in clients.iter().filter(|c| !c.revoked) {
                                tr {
                                    td data-label="Name" { (c.name) }
                                    td data-label="Starts with" {
                                        @if c.prefix.is_empty() { span.pill { "config" } } @else { code { (c.prefix) "…" } }
                                    }
                                    td data-label="Limits" {
                                        span.limits { (c.limits.summary()) }
                                        div.muted { (c.usage.day_requests) " requests, " (c.usage.day_tokens) " tokens today" }
                                        @if c.limits_from_config { div.muted { "set in the config file" } }
                                    }
                                    td data-label="Created" { (c.created_ms.map(fmt_time).unwrap_or_default()) }
                                    td data-label="Last used" {
                                        @match c.last_used_ms { Some(t) => { (fmt_time(t)) }, None => { span.muted { "never" } } }
                                    }
                                    td.actions data-label="Actions" {
                                        @if c.id.is_some() && !c.limits_from_config {
                                            (limits_form(c))
                                        }
                                        @if c.id.is_some() {
                                            button.small.danger type="button" data-act="call" data-method="DELETE"
                                                data-url={ "/admin/api/client-keys/" (urlencode(&c.name)) }
                                                data-confirm={ "Revoke the client key \u{201c}" (c.name) "\u{201d}? Apps using it stop working." }
                                                { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form.row #new-client-key data-api="/admin/api/client-keys" data-then="show-key" {
                    label { "Name" input type="text" name="name" required placeholder="laptop" autocomplete="off"; }
                    button.primary type="submit" { "Create client key" }
                }
                div.secret #new-key hidden {
                    span { "New key " strong #new-key-name {} ": " }
                    code #new-key-value tabindex="-1" {}
                    button type="button" data-act="copy" data-target="new-key-value" { "Copy" }
                }
            }
        };
        Ok(layout("Keys", "/admin/keys", Some(&session.csrf), body))
    })
    .await
}

/// The form that edits a client key's limits (SPEC 3.8): every field shown as it is; an empty
/// one means no limit.
fn limits_form(c: &crate::ops::ClientKeyView) -> Markup {
    let l = &c.limits;
    let num = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let expires = l
        .expires_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    html! {
        details.limits-edit {
            summary { "Edit limits" }
            form.stack data-api={ "/admin/api/client-keys/" (urlencode(&c.name)) } data-method="PATCH" data-kind="limits"
                aria-label={ "Limits of " (c.name) } {
                div.triple {
                    label { "Requests / minute" input type="number" name="rpm" min="1" value=(num(l.rpm)); }
                    label { "Requests / day" input type="number" name="rpd" min="1" value=(num(l.rpd)); }
                    label { "In flight" input type="number" name="concurrent" min="1" value=(num(l.concurrent.map(u64::from))); }
                }
                div.triple {
                    label { "Tokens / day" input type="number" name="tpd" min="1" value=(num(l.tpd)); }
                    label { "Tokens / month" input type="number" name="tpmo" min="1" value=(num(l.tpmo)); }
                    label { "Weight" input type="number" name="weight" min="1" max="1000" value=(num(l.weight.map(u64::from))); }
                }
                label { "Models (comma-separated; empty: all)"
                    input type="text" name="models" value=(l.models.join(", ")) placeholder="gpt-oss-120b, groq/*" autocomplete="off";
                }
                label { "Expires (UTC date; empty: never)" input type="date" name="expires" value=(expires); }
                p.muted { "Empty means no limit. Days and months are UTC." }
                button.primary type="submit" { "Save limits" }
            }
        }
    }
}

/// A path segment, percent-encoded.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Used against a cap, as a bar (`None`: no cap, just the count).
fn usage_bar(what: &str, used: u64, cap: Option<u64>) -> Markup {
    html! {
        div.bar {
            @match cap {
                Some(cap) => {
                    span { (what) " " (used) " / " (cap) }
                    progress class=[(used >= cap).then_some("full")] max=(cap.max(1)) value=(used.min(cap))
                        aria-label={ (what) " used today" } {}
                },
                None => { span { (what) " " (used) " (no cap)" } },
            }
        }
    }
}

fn chain_row(e: &ChainEntry, first: bool, last: bool) -> Markup {
    let lim = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
    let pools = e.pools.max(1) as u64;
    html! {
        tr data-model=(e.model) class=[(e.keys == 0).then_some("nokey")] {
            td data-label="#" { (e.position) }
            td data-label="On" {
                button.small type="button" data-act="switch" data-model=(e.model)
                    data-enabled=(if e.enabled { "false" } else { "true" })
                    aria-pressed=(if e.enabled { "true" } else { "false" })
                    aria-label={ (if e.enabled { "Switch off " } else { "Switch on " }) (e.model) } {
                    @if e.enabled { span.pill.on { "on" } } @else { span.pill.off { "off" } }
                }
            }
            td data-label="Model" {
                strong { (e.model) }
                div.muted { (e.canonical) " · rank " (e.rank) " · " (e.keys) " key(s)" }
                @if !e.learned.is_empty() || e.benched.is_some() {
                    ul.learned aria-label="Learned from the provider's answers" {
                        @for (lesson, why) in &e.learned { li title=(why) { "learned: " (lesson) } }
                        @if let Some((until, why)) = &e.benched {
                            li title=(why) { "tried last until " (fmt_time(*until)) ": streams keep breaking" }
                        }
                    }
                }
            }
            td data-label="Limits per key" {
                span.muted { "rpm " (lim(e.limits.rpm)) " · rpd " (lim(e.limits.rpd)) " · tpm " (lim(e.limits.tpm)) " · tpd " (lim(e.limits.tpd)) }
                @if e.rpd_of_account { div.muted { "rpd: account-wide" } }
            }
            td data-label="Used today" {
                @if e.rpd_of_account {
                    (usage_bar("requests (account)", e.account_requests_today, e.limits.rpd.map(|c| c * pools)))
                } @else {
                    (usage_bar("requests", e.requests_today, e.limits.rpd.map(|c| c * pools)))
                }
                @if e.limits.tpd.is_some() || e.tokens_today > 0 {
                    (usage_bar("tokens", e.tokens_today, e.limits.tpd.map(|c| c * pools)))
                }
                @if let Some(p) = &e.paced {
                    div.muted title={ "routing.pacing = \"" (p.by) "\": what the pace allows of the day's " (p.cap) " requests by now" } {
                        "paced (" (p.by) "): " (p.allowed) " allowed so far, " (p.held) " held for later"
                    }
                }
            }
            td.now data-label="Now" {
                @if let Some(why) = &e.retired { span.pill.off title=(why) { "retired" } div.muted { (why) } }
                @else if !e.enabled { span.muted { "off" } }
                @else if e.keys == 0 { span.muted { "no key" } }
                @else if e.available { span.pill.on { "ready" } }
                @else {
                    @match e.frees_at_ms {
                        Some(t) => { "frees at " (fmt_time(t)) },
                        None => { "capped" },
                    }
                }
            }
            td.actions data-label="Move" {
                button.small type="button" data-act="move" data-dir="up" data-model=(e.model) disabled[first]
                    aria-label={ "Move " (e.model) " up" } { "↑" }
                button.small type="button" data-act="move" data-dir="down" data-model=(e.model) disabled[last]
                    aria-label={ "Move " (e.model) " down" } { "↓" }
            }
        }
    }
}

pub async fn chain(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    page(server, headers, move |server, session| {
        let chain = server.ops.chain();
        let n = chain.len();
        let body = html! {
            h1 { "Routing chain" }
            p.lead { "Requests for " code { "auto" } " try these models from the top: the first one that has a key, "
                "fits the request and has free capacity answers. Models without a key are skipped." }
            section.card {
                div.table-wrap {
                    table.cards {
                        thead { tr { th { "#" } th { "On" } th { "Model" } th { "Limits per key" } th { "Used today" } th { "Now" } th { "Move" } } }
                        tbody { @for (i, e) in chain.iter().enumerate() { (chain_row(e, i == 0, i + 1 == n)) } }
                    }
                }
            }
        };
        Ok(layout("Chain", "/admin/chain", Some(&session.csrf), body))
    })
    .await
}

/// Counts for people: 1234567 → "1.2M".
fn short_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

fn ms(v: Option<u64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v < 1000 => format!("{v} ms"),
        Some(v) => format!("{:.1} s", v as f64 / 1000.0),
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |r| format!("{:.1} %", r * 100.0))
}

fn tile(label: &str, value: String, sub: Option<String>) -> Markup {
    html! {
        div.tile {
            div.tile-label { (label) }
            div.tile-value { (value) }
            @if let Some(s) = sub { div.muted { (s) } }
        }
    }
}

/// The segments of one stacked bar: (class, value, top, height), bottom up from `plot`.
fn stack(parts: &[(&'static str, u64)], max: u64, plot: f64) -> Vec<(&'static str, u64, f64, f64)> {
    let mut y = plot;
    let mut out = Vec::new();
    for (class, v) in parts.iter().filter(|(_, v)| *v > 0) {
        let h = *v as f64 / max as f64 * (plot - 8.0);
        y -= h;
        out.push((*class, *v, y, h));
    }
    out
}

/// Stacked bars over time: each step `(label, [(class, value)])`, drawn as SVG.
fn bars_over_time(
    title: &str,
    steps: &[(String, Vec<(&'static str, u64)>)],
    legend: &[(&str, &str)],
) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 44.0;
    const BOTTOM: f64 = 22.0;
    let max = steps
        .iter()
        .map(|(_, parts)| parts.iter().map(|(_, v)| v).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = steps.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let bar = (slot * 0.7).max(1.0);
    let plot = H - BOTTOM;
    let every = (steps.len() / 8).max(1);
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
                title { (title) }
                line.axis x1=(LEFT) y1=(plot) x2=(W) y2=(plot) {}
                text.axis-label x=(LEFT - 6.0) y="12" text-anchor="end" { (short_count(max)) }
                text.axis-label x=(LEFT - 6.0) y=(plot) text-anchor="end" { "0" }
                @for (i, (label, parts)) in steps.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
                    @for (class, v, top, h) in stack(parts, max, plot) {
                        rect class=(class) x=(format!("{x:.1}")) y=(format!("{top:.1}")) width=(format!("{bar:.1}")) height=(format!("{h:.1}")) {
                            title { (label) ": " (v) " " (class.trim_start_matches("bar-")) }
                        }
                    }
                    @if i % every == 0 {
                        text.axis-label x=(format!("{:.1}", x + bar / 2.0)) y=(H - 6.0) text-anchor="middle" { (label) }
                    }
                }
            }
            figcaption.legend {
                @for (class, name) in legend { span { span class={ "swatch " (class) } {} (name) } }
            }
        }
    }
}

/// Horizontal bars, one per row, for the per-provider share.
fn bars_per_row(title: &str, rows: &[(String, u64, u64)]) -> Markup {
    let max = rows
        .iter()
        .map(|(_, ok, bad)| ok + bad)
        .max()
        .unwrap_or(0)
        .max(1);
    let h = 26.0;
    let height = (rows.len().max(1) as f64) * h + 4.0;
    html! {
        figure.chart {
            svg viewBox={ "0 0 720 " (height) } role="img" aria-label=(title) {
                title { (title) }
                @for (i, (name, ok, bad)) in rows.iter().enumerate() {
                    @let y = i as f64 * h + 4.0;
                    @let wok = *ok as f64 / max as f64 * 460.0;
                    @let wbad = *bad as f64 / max as f64 * 460.0;
                    text.axis-label x="150" y=(format!("{:.1}", y + 15.0)) text-anchor="end" { (name) }
                    rect.bar-ok x="160" y=(format!("{y:.1}")) width=(format!("{wok:.1}")) height="18" { title { (name) ": " (ok) " succeeded" } }
                    rect.bar-failed x=(format!("{:.1}", 160.0 + wok)) y=(format!("{y:.1}")) width=(format!("{wbad:.1}")) height="18" { title { (name) ": " (bad) " failed or cancelled" } }
                    text.axis-label x=(format!("{:.1}", 166.0 + wok + wbad)) y=(format!("{:.1}", y + 15.0)) { (short_count(ok + bad)) }
                }
            }
        }
    }
}

fn figures_row(name: Markup, f: &crate::analytics::Figures) -> Markup {
    let r = &f.rollup;
    html! {
        tr {
            td data-label="Name" { (name) }
            td data-label="Requests" { (r.requests) }
            td data-label="Failed" { (r.failed) @if r.cancelled > 0 { span.muted { " + " (r.cancelled) " cancelled" } } }
            td data-label="Success" { (percent(f.success_rate())) }
            td data-label="Tokens in / out" { (short_count(r.tokens_in)) " / " (short_count(r.tokens_out)) }
            td data-label="Latency p50 / p95" { (ms(r.latency.quantile(0.5))) " / " (ms(r.latency.quantile(0.95))) }
            td data-label="First token p50 / p95" { (ms(r.ttft.quantile(0.5))) " / " (ms(r.ttft.quantile(0.95))) }
            td data-label="Failed attempts" { (r.failed_attempts) }
        }
    }
}

/// `empty`: what a row without a name is (requests no provider served; for clients, rows
/// logged before clients were counted).
fn figures_table(what: &str, empty: &str, rows: &[(String, crate::analytics::Figures)]) -> Markup {
    html! {
        div.table-wrap {
            table.cards {
                thead { tr { th { (what) } th { "Requests" } th { "Failed" } th { "Success" } th { "Tokens in / out" }
                    th { "Latency p50 / p95" } th { "First token p50 / p95" } th { "Failed attempts" } } }
                tbody {
                    @for (name, f) in rows {
                        (figures_row(html! { @if name.is_empty() { span.muted { (empty) } } @else { (name) } }, f))
                    }
                }
            }
        }
    }
}

fn request_row(r: &crate::record::RequestRow) -> Markup {
    let ok = r.status == 200 && r.error.is_none();
    html! {
        tr {
            td data-label="When" { (fmt_time(r.at_ms)) }
            td data-label="Asked for" {
                (r.requested_model) @if r.stream { " " span.pill { "stream" } }
                @if let Some(surface) = r.surface.as_deref().filter(|s| *s != "chat") { " " span.pill { (surface) } }
                @if let Some(n) = &r.notes { div.muted { (n) } }
            }
            td data-label="Served by" { (r.served_by.as_deref().unwrap_or("–")) }
            td data-label="Status" {
                span class={ "pill " (if ok { "on" } else { "off" }) } { (r.status) }
                @if let Some(e) = &r.error { div.error-text { (e) } }
            }
            td data-label="Time" { (ms(Some(r.latency_ms))) @if r.stream { span.muted { " · first token " (ms(r.ttft_ms)) } } }
            td data-label="Tokens" { (r.tokens_in) " / " (r.tokens_out) }
            td data-label="Attempts" {
                details {
                    summary { (r.attempts.len()) " attempt(s)" }
                    ol.attempts {
                        @for a in &r.attempts {
                            li {
                                code { (a.target) } " · " (a.outcome)
                                @if let Some(s) = a.status { " " (s) }
                                " · " (ms(Some(a.latency_ms)))
                                @if let Some(k) = &a.key_id { span.muted { " · key " (crate::ledger::short(k)) } }
                                @if let Some(e) = &a.error { div.error-text { (e) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn analytics(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    page(server, headers, move |server, session| {
        let window = q.get("window").map(String::as_str).unwrap_or("24h");
        let window = if crate::analytics::Window::parse(window).is_some() {
            window
        } else {
            "24h"
        };
        let client = q.get("client").map(String::as_str).filter(|c| !c.is_empty());
        let report = server.ops.analytics_of(window, client)?;
        let before = q.get("before").map(String::as_str);
        let recent = server.ops.requests(before, 50)?;
        let hourly = report.window == crate::analytics::Window::Day;
        let label = |start: i64| {
            chrono::DateTime::from_timestamp_millis(start)
                .map(|t| {
                    if hourly {
                        t.format("%H:00").to_string()
                    } else {
                        t.format("%m-%d").to_string()
                    }
                })
                .unwrap_or_default()
        };
        let req_steps: Vec<(String, Vec<(&'static str, u64)>)> = report
            .series
            .iter()
            .map(|s| {
                (
                    label(s.start),
                    vec![
                        ("bar-ok", s.requests - s.failed.min(s.requests)),
                        ("bar-failed", s.failed),
                    ],
                )
            })
            .collect();
        let tok_steps: Vec<(String, Vec<(&'static str, u64)>)> = report
            .series
            .iter()
            .map(|s| {
                (
                    label(s.start),
                    vec![("bar-in", s.tokens_in), ("bar-out", s.tokens_out)],
                )
            })
            .collect();
        let providers: Vec<(String, u64, u64)> = report
            .by_provider
            .iter()
            .map(|(p, f)| {
                let name = if p.is_empty() {
                    "(none served)".to_string()
                } else {
                    p.clone()
                };
                (
                    name,
                    f.rollup.succeeded,
                    f.rollup.failed + f.rollup.cancelled,
                )
            })
            .collect();
        let t = &report.totals.rollup;
        let body = html! {
            h1 { "Analytics" }
            nav.windows aria-label="Window" {
                @for (w, name) in [("24h", "Last 24 hours"), ("7d", "7 days"), ("30d", "30 days")] {
                    @let href = match client { Some(c) => format!("?window={w}&client={}", urlencode(c)), None => format!("?window={w}") };
                    @if w == window { a href=(href) aria-current="page" { (name) } }
                    @else { a href=(href) { (name) } }
                }
            }
            form.row #client-filter method="get" action="/admin/analytics" {
                input type="hidden" name="window" value=(window);
                label { "Client key"
                    select name="client" {
                        option value="" { "All client keys" }
                        @for (name, _) in report.by_client.iter().filter(|(n, _)| !n.is_empty()) {
                            option value=(name) selected[client == Some(name.as_str())] { (name) }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if let Some(c) = client { p.notice { "Only the requests of the client key " strong { (c) } ". " a href={ "?window=" (window) } { "Show all" } } }
            div.tiles #totals {
                (tile("Requests", short_count(t.requests), Some(format!("{} failed · {} cancelled", t.failed, t.cancelled))))
                (tile("Success rate", percent(report.totals.success_rate()), None))
                (tile("Tokens in", short_count(t.tokens_in), None))
                (tile("Tokens out", short_count(t.tokens_out), None))
                (tile("Latency p50 / p95", format!("{} / {}", ms(t.latency.quantile(0.5)), ms(t.latency.quantile(0.95))), None))
                (tile("First token p50 / p95", format!("{} / {}", ms(t.ttft.quantile(0.5)), ms(t.ttft.quantile(0.95))), Some("streams".into())))
            }
            section.card {
                h2 { "Requests over time" }
                (bars_over_time("Requests per step: succeeded and failed", &req_steps, &[("bar-ok", "succeeded or cancelled"), ("bar-failed", "failed")]))
            }
            section.card {
                h2 { "Tokens over time" }
                (bars_over_time("Tokens per step: in and out", &tok_steps, &[("bar-in", "in"), ("bar-out", "out")]))
            }
            section.card {
                h2 { "Per provider" }
                @if providers.is_empty() { p.muted { "No requests in this window yet." } }
                @else { (bars_per_row("Requests per provider", &providers)) }
                (figures_table("Provider", "(none served)", &report.by_provider))
            }
            section.card {
                h2 { "Per model" }
                (figures_table("Model", "(none served)", &report.by_model))
            }
            section.card #per-client {
                h2 { "Per client key" }
                (figures_table("Client key", "(logged before clients were counted)", &report.by_client))
            }
            section.card #recent {
                h2 { "Recent requests" }
                @if recent.is_empty() { p.muted { "Nothing logged yet: send a request, or try the " a href="/admin/playground" { "Playground" } "." } }
                @else {
                    div.table-wrap {
                        table.cards {
                            thead { tr { th { "When" } th { "Asked for" } th { "Served by" } th { "Status" } th { "Time" } th { "Tokens in / out" } th { "Attempts" } } }
                            tbody { @for r in &recent { (request_row(r)) } }
                        }
                    }
                    @if recent.len() == 50 {
                        @if let Some(last) = recent.last() {
                            p { a href={ "?window=" (window) "&before=" (urlencode(&last.id)) "#recent" } { "Older requests" } }
                        }
                    }
                }
            }
        };
        Ok(layout(
            "Analytics",
            "/admin/analytics",
            Some(&session.csrf),
            body,
        ))
    })
    .await
}

pub async fn playground(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    page(server, headers, move |server, session| {
        let (groups, _) = server.ops.model_groups(false);
        // The playground chats: embedding models have nothing to say.
        let groups: Vec<_> = groups.into_iter().filter(|g| g.embedding.is_none()).collect();
        let body = html! {
            h1 { "Playground" }
            p.lead { "A chat through the router, as any client's would go: the answer streams from whichever provider serves it." }
            form.card #playground {
                div.row3 {
                    label { "Model"
                        select name="model" {
                            option value="auto" { "auto (the chain)" }
                            @for g in &groups { option value=(g.canonical) { (g.canonical) } }
                        }
                    }
                    label { "Temperature"
                        input type="number" name="temperature" min="0" max="2" step="0.1" value="0.7";
                    }
                }
                label { "System prompt (optional)"
                    textarea name="system" rows="2" {}
                }
                div #chat aria-live="polite" {}
                label { "Message"
                    textarea name="message" rows="3" required {}
                }
                div.buttons {
                    button.primary type="submit" { "Send" }
                    button type="button" data-act="new-chat" { "New chat" }
                }
                div #meta .muted {}
                ol #trail .attempts hidden {}
            }
            @if groups.is_empty() {
                p.notice { "No provider key can serve a model yet: " a href="/admin/keys" { "add a key" } " first." }
            }
        };
        Ok(layout(
            "Playground",
            "/admin/playground",
            Some(&session.csrf),
            body,
        ))
    })
    .await
}
