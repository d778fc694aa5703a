//! The admin pages (SPEC 6.3), rendered on the server (maud escapes everything it writes) with
//! one small script and one stylesheet, both embedded in the binary.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use std::collections::HashMap;
use std::sync::Arc;

use super::{Error, session_of};
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
const NAV: &[(&str, &str)] = &[("/admin/keys", "Keys"), ("/admin/chain", "Chain")];

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

/// Where someone without a session goes: the login page (which, before any password exists,
/// points to the setup link).
fn needs_login() -> Result<Response, Error> {
    Ok(Redirect::to("/admin/login").into_response())
}

pub async fn home(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    match session_of(&server, &headers)? {
        Some(_) => Ok(Redirect::to("/admin/keys").into_response()),
        None => needs_login(),
    }
}

pub async fn login(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if session_of(&server, &headers)?.is_some() {
        return Ok(Redirect::to("/admin/keys").into_response());
    }
    let body = if server.admin.needs_setup()? {
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
    let body = if !server.admin.needs_setup()? {
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
    let Some(session) = session_of(&server, &headers)? else {
        return needs_login();
    };
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
                    thead { tr { th { "Name" } th { "Starts with" } th { "Created" } th { "Last used" } th { "Actions" } } }
                    tbody {
                        @for c in clients.iter().filter(|c| !c.revoked) {
                            tr {
                                td data-label="Name" { (c.name) }
                                td data-label="Starts with" {
                                    @if c.prefix.is_empty() { span.pill { "config" } } @else { code { (c.prefix) "…" } }
                                }
                                td data-label="Created" { (c.created_ms.map(fmt_time).unwrap_or_default()) }
                                td data-label="Last used" {
                                    @match c.last_used_ms { Some(t) => { (fmt_time(t)) }, None => { span.muted { "never" } } }
                                }
                                td.actions data-label="Actions" {
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
            form.row data-api="/admin/api/client-keys" data-then="show-key" {
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
    let keys = e.keys.max(1) as u64;
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
            }
            td data-label="Limits per key" {
                span.muted { "rpm " (lim(e.limits.rpm)) " · rpd " (lim(e.limits.rpd)) " · tpm " (lim(e.limits.tpm)) " · tpd " (lim(e.limits.tpd)) }
            }
            td data-label="Used today" {
                (usage_bar("requests", e.requests_today, e.limits.rpd.map(|c| c * keys)))
                @if e.limits.tpd.is_some() || e.tokens_today > 0 {
                    (usage_bar("tokens", e.tokens_today, e.limits.tpd.map(|c| c * keys)))
                }
            }
            td.now data-label="Now" {
                @if !e.enabled { span.muted { "off" } }
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
    let Some(session) = session_of(&server, &headers)? else {
        return needs_login();
    };
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
}
