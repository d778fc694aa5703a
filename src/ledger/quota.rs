//! What upstreams say about their own remaining quota: `x-ratelimit-remaining-*` and
//! `x-ratelimit-reset-*` headers (Groq, Cerebras, OpenRouter and others), read into
//! [`UpstreamQuota`]s that the ledger believes over its own count.

use std::time::Duration;

/// Which window an upstream's remaining-quota header speaks about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuotaWindow {
    Minute,
    Day,
    /// The header does not say; guessed from which caps the model has.
    Unknown,
}

/// What an upstream said about its remaining quota.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamQuota {
    pub tokens: bool,
    pub window: QuotaWindow,
    pub remaining: u64,
    pub reset: Option<Duration>,
}

/// Read `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` headers (Groq, Cerebras, OpenRouter
/// and others). Header names are lower-case.
pub fn parse_quota_headers<'a>(
    headers: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<UpstreamQuota> {
    let mut remaining: Vec<(bool, QuotaWindow, u64)> = Vec::new();
    let mut resets: Vec<(bool, QuotaWindow, Duration)> = Vec::new();
    for (name, value) in headers {
        let Some(rest) = name.strip_prefix("x-ratelimit-") else {
            continue;
        };
        let (is_remaining, what) = if let Some(w) = rest.strip_prefix("remaining-") {
            (true, w)
        } else if let Some(w) = rest.strip_prefix("reset-") {
            (false, w)
        } else {
            continue;
        };
        let (tokens, window) = match what {
            "requests" => (false, QuotaWindow::Unknown),
            "tokens" => (true, QuotaWindow::Unknown),
            "requests-day" => (false, QuotaWindow::Day),
            "requests-minute" => (false, QuotaWindow::Minute),
            "tokens-day" => (true, QuotaWindow::Day),
            "tokens-minute" => (true, QuotaWindow::Minute),
            _ => continue,
        };
        if is_remaining {
            if let Ok(n) = value.trim().parse::<f64>() {
                if n.is_finite() && n >= 0.0 {
                    remaining.push((tokens, window, n as u64));
                }
            }
        } else if let Ok(d) = crate::units::parse_duration(value) {
            resets.push((tokens, window, d));
        }
    }
    remaining
        .into_iter()
        .map(|(tokens, window, remaining)| UpstreamQuota {
            tokens,
            window,
            remaining,
            reset: resets
                .iter()
                .find(|(t, w, _)| *t == tokens && *w == window)
                .map(|(_, _, d)| *d),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_and_reset_headers() {
        let headers = [
            ("x-ratelimit-remaining-requests", "990"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "7.66s"),
            ("x-ratelimit-reset-requests", "2m59.56s"),
            ("x-ratelimit-remaining-requests-day", "-3"),
            ("content-type", "application/json"),
        ];
        let q = parse_quota_headers(headers.iter().copied());
        assert_eq!(
            q,
            vec![
                UpstreamQuota {
                    tokens: false,
                    window: QuotaWindow::Unknown,
                    remaining: 990,
                    reset: Some(Duration::from_millis(179_560)),
                },
                UpstreamQuota {
                    tokens: true,
                    window: QuotaWindow::Unknown,
                    remaining: 0,
                    reset: Some(Duration::from_millis(7_660)),
                },
            ]
        );
    }
}
