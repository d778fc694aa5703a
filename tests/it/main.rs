//! Freeway's integration tests: one binary, real sockets on loopback, mock upstreams.

mod abuse;
mod admin;
mod analytics;
mod api;
mod architecture;
mod browser;
mod cli;
mod clients;
mod dialects;
mod embeddings;
mod failover;
mod gemini;
mod gemini_api;
mod harness;
mod idempotency;
mod learning;
mod ollama;
mod process;
mod proxy;
mod quota;
mod routing;
mod surfaces;
mod tenants;
mod tools;
mod vendors;
