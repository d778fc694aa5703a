//! Freeway: one OpenAI-compatible endpoint in front of many free LLM tiers.
//!
//! See ARCHITECTURE.md for the map. The binary (`main.rs`) is a thin shell over [`cli`].

pub mod admin;
pub mod analytics;
pub mod app;
pub mod cache;
pub mod catalog;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod error;
pub mod health;
pub mod http;
pub mod keys;
pub mod ledger;
pub mod lessons;
pub mod live;
pub mod metrics;
pub mod offload;
pub mod ops;
pub mod providers;
pub mod record;
pub mod reqlog;
pub mod router;
pub mod sse;
pub mod store;
pub mod units;
pub mod upstream;
pub mod wire;
