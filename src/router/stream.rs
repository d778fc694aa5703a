//! Streamed answers: [`Pump`] reads an upstream stream event by event through its dialect's
//! decoder; [`Tail`] is the committed rest of a stream, handed to the client's surface as
//! [`Piece`]s, which settles the reservation and writes the log row when it ends, or when the
//! client goes away and drops it (once content was sent, its tokens stay counted).

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flaky::{Flaky, Route};
use crate::chat::Piece;
use crate::ledger::Reservation;
use crate::live::Live;
use crate::providers::Decoder;
use crate::record::RequestRow;
use crate::reqlog::RequestLog;
use crate::sse;
use crate::upstream;

/// The largest SSE event accepted from an upstream.
const MAX_EVENT: usize = 8 << 20;

/// Reads an upstream stream.
pub struct Pump {
    body: upstream::Body,
    sse: sse::Decoder,
    decoder: Decoder,
    stall: Duration,
    /// When the stream last made progress (content, or a finish): comments, keep-alives, empty
    /// deltas and bytes that complete nothing do not count.
    progress: Instant,
    /// Some content has been seen.
    pub content: bool,
    /// A finish reason has been seen.
    finished: bool,
}

/// Where a stream stands after a step.
pub enum State {
    More,
    /// The upstream ended cleanly (finish reason seen).
    End,
    /// The stream was cut, stalled or ended without a finish reason.
    Broken(String),
    /// The upstream sent an error event (its words).
    Error(String),
}

impl Pump {
    pub fn new(body: upstream::Body, decoder: Decoder, stall: Duration) -> Pump {
        Pump {
            body,
            sse: sse::Decoder::new(MAX_EVENT),
            decoder,
            stall,
            progress: Instant::now(),
            content: false,
            finished: false,
        }
    }

    /// Tokens the upstream reported, (input, output).
    pub fn usage(&self) -> Option<crate::chat::Usage> {
        self.decoder.usage()
    }

    /// Read one upstream chunk and decode the events it completes into `out`.
    pub async fn step(&mut self, out: &mut Vec<Piece>) -> State {
        let left = self.stall.saturating_sub(self.progress.elapsed());
        let events = match tokio::time::timeout(left, upstream::next_chunk(&mut self.body)).await {
            Err(_) => {
                return State::Broken(format!(
                    "the stream sent no content for {}s",
                    self.stall.as_secs()
                ));
            }
            Ok(Some(Err(e))) => return State::Broken(format!("the stream was cut ({e})")),
            Ok(Some(Ok(bytes))) => match self.sse.feed(&bytes) {
                Ok(events) => events,
                Err(e) => return State::Broken(e.to_string()),
            },
            Ok(None) => {
                let last = self.sse.finish();
                return match self.apply(last.into_iter().collect(), out) {
                    State::More if self.finished => State::End,
                    State::More => State::Broken("the stream ended without a finish reason".into()),
                    other => other,
                };
            }
        };
        self.apply(events, out)
    }

    fn apply(&mut self, events: Vec<sse::Event>, out: &mut Vec<Piece>) -> State {
        for ev in events {
            let d = self.decoder.on_event(ev);
            // Only content (text, reasoning, a tool call's name or arguments) or a finish reason
            // is progress: an upstream that trickles empty chunks is stalled all the same.
            if d.content || d.finished {
                self.progress = Instant::now();
            }
            out.extend(d.piece);
            self.content |= d.content;
            self.finished |= d.finished;
            if let Some(err) = d.error {
                return State::Error(err);
            }
            if d.done {
                return if self.finished {
                    State::End
                } else {
                    State::Broken("the stream ended without a finish reason".into())
                };
            }
        }
        State::More
    }
}

/// The committed part of a stream: hands on pieces as they arrive and closes the books.
pub struct Tail {
    pub log: Arc<RequestLog>,
    /// Its key ring redacts upstream words.
    pub live: Arc<Live>,
    pub pending: VecDeque<Piece>,
    pub pump: Pump,
    pub reservation: Option<Reservation>,
    /// The log row, until the books are closed (then nothing more is read from the upstream).
    pub row: Option<RequestRow>,
    pub started: Instant,
    /// Counts the route's cut streams (SPEC 3.9).
    pub flaky: Arc<Flaky>,
    pub route: Route,
    /// The client key's claim on its own limits and its place in flight (SPEC 3.8).
    pub client: super::clients::Admission,
}

impl Tail {
    pub fn into_stream(self) -> BoxStream<'static, Piece> {
        futures_util::stream::unfold(self, |mut tail| async move {
            loop {
                if let Some(p) = tail.pending.pop_front() {
                    return Some((p, tail));
                }
                if tail.closed() {
                    return None;
                }
                let mut out = Vec::new();
                let state = tail.pump.step(&mut out).await;
                tail.pending.extend(out);
                match state {
                    State::More => {}
                    State::End => {
                        tail.flaky.ended(&tail.route);
                        tail.close(None)
                    }
                    State::Broken(reason) | State::Error(reason) => {
                        let reason = tail.live.keys.redact(&reason);
                        tail.flaky.cut(&tail.route, &reason);
                        tracing::warn!(reason = %reason, "stream interrupted after content");
                        tail.pending.push_back(Piece::Interrupted(reason.clone()));
                        tail.close(Some(format!("stream_interrupted: {reason}")));
                    }
                }
            }
        })
        .boxed()
    }

    /// The books are closed: nothing more is read from the upstream.
    fn closed(&self) -> bool {
        self.row.is_none()
    }

    /// The stream is over: settle, write the log row.
    pub fn close(&mut self, error: Option<String>) {
        let usage = self.pump.usage();
        // Content was sent: the upstream spent the tokens, finished or not. What it reported
        // is settled; else the estimate stands.
        if let Some(r) = self.reservation.take() {
            r.settle(usage.map(|u| u.total()));
        }
        self.client.settle(usage.map(|u| u.total()));
        if let Some(mut row) = self.row.take() {
            if let Some(u) = usage {
                row.tokens_in = u.input;
                row.tokens_out = u.output;
            }
            row.status = 200;
            row.latency_ms = self.started.elapsed().as_millis() as u64;
            row.error = error;
            self.log.record(row);
        }
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. The upstream request is dropped with
        // the pump; the tokens it spent on the content sent so far stay counted (what it
        // reported, else the estimate).
        if let Some(r) = self.reservation.take() {
            r.settle(self.pump.usage().map(|u| u.total()));
        }
        self.client.settle(self.pump.usage().map(|u| u.total()));
        if let Some(mut row) = self.row.take() {
            row.status = 499;
            row.latency_ms = self.started.elapsed().as_millis() as u64;
            row.error = Some("client disconnected".into());
            self.log.record(row);
        }
    }
}
