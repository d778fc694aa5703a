//! SSE decoder: arbitrary bytes, cut into chunks at fuzzer-chosen points.
//!
//! Input layout: `data[0] % 8` = number of cuts `k`; the next `k` bytes pick the cut points
//! (scaled over the payload); the rest is the payload fed to the decoder.
//!
//! Properties: never panics; feeding the payload in chunks yields the same events as feeding
//! it whole (when neither errored); no event carries a line terminator where none can be.
#![no_main]

use freeway::sse::{Decoder, Event};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 16;

/// Feed `chunks` in order, then finish. `None` if any feed errored.
fn decode(max: usize, chunks: &[&[u8]]) -> Option<Vec<Event>> {
    let mut d = Decoder::new(max);
    let mut out = Vec::new();
    let mut failed = false;
    for c in chunks {
        match d.feed(c) {
            Ok(evs) => out.extend(evs),
            Err(_) => failed = true,
        }
    }
    out.extend(d.finish());
    (!failed).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let k = ((first % 8) as usize).min(rest.len());
    let (cut_bytes, payload) = rest.split_at(k);

    // Positions in 0..=payload.len(); every position is reachable for payloads under 256 bytes.
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&b| b as usize * (payload.len() + 1) / 256)
        .collect();
    cuts.sort_unstable();
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(cuts.len() + 1);
    let mut last = 0;
    for c in cuts {
        chunks.push(&payload[last..c]);
        last = c;
    }
    chunks.push(&payload[last..]);

    let chunked = decode(MAX, &chunks);
    let whole = decode(MAX, &[payload]);
    if let (Some(chunked), Some(whole)) = (&chunked, &whole) {
        assert_eq!(chunked, whole, "chunk boundaries changed the events");
        for ev in whole {
            // Lines are split on \r and \n, and data lines are joined with \n only.
            assert!(!ev.data.contains('\r'), "data holds a CR: {ev:?}");
            if let Some(name) = &ev.event {
                assert!(
                    !name.contains(['\r', '\n']),
                    "event name holds a line end: {ev:?}"
                );
            }
        }
    }

    // A tight limit too, so the TooLarge path (and what the decoder does after it) is reached.
    let _ = decode(32, &chunks);
});
