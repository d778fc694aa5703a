//! Failure classification of a non-2xx upstream answer, and the credential scrubber.
//!
//! Input layout: bytes 0-1 = HTTP status (big-endian u16); byte 2 = length `n` of a
//! `Retry-After` header value (`n == 0` means no header) taken from the following bytes; the
//! rest is the body.
//!
//! Properties: never panics; scrubbing is idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let once = freeway::error::scrub(&text);
    assert_eq!(
        freeway::error::scrub(&once),
        once,
        "scrub is not idempotent"
    );

    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*hi, *lo]);
    let (retry_after, body) = match rest.split_first() {
        Some((&n, tail)) if n > 0 => {
            let n = (n as usize).min(tail.len());
            (
                Some(String::from_utf8_lossy(&tail[..n]).into_owned()),
                &tail[n..],
            )
        }
        Some((_, tail)) => (None, tail),
        None => (None, rest),
    };
    let failure = freeway::providers::classify(status, retry_after.as_deref(), body);
    let _ = (failure.reason(), failure.tag());
    if let Some(v) = retry_after.as_deref() {
        let _ = freeway::providers::classify::parse_retry_after(v);
    }
});
