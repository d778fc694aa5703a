//! Durations and sizes as people and upstreams write them: the one parser of each.
//!
//! Durations go through `humantime` (`500ms`, `45s`, `2m59.56s`, `1h 30m`, `90d`); a bare number
//! is seconds, as in `Retry-After`. Numbers from upstreams are never trusted to fit: anything
//! negative, not finite or beyond about thirty years is refused rather than turned into a panic.

use std::time::Duration;

/// The longest duration accepted from anywhere (about 31 years).
const MAX_SECS: f64 = 1e9;

/// Seconds as a `Duration`, if finite, not negative and below [`MAX_SECS`]
/// (`Duration::from_secs_f64` panics on overflow).
pub fn secs(value: f64) -> Option<Duration> {
    (0.0..MAX_SECS)
        .contains(&value)
        .then(|| Duration::try_from_secs_f64(value).ok())
        .flatten()
}

/// `500ms`, `45s`, `7.66s`, `2m59.56s`, `1h2m3s`, `30m`, `2h`, `90d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(value) = t.parse::<f64>() {
        return secs(value).ok_or_else(|| format!("{text:?} is out of range"));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        format!("{text:?} is not a duration ({e}; use e.g. 500ms, 45s, 30m, 2h, 1d)")
    })?;
    if d.as_secs_f64() >= MAX_SECS {
        return Err(format!("{text:?} is too long"));
    }
    Ok(d)
}

/// `25MB`, `512KB`, `1GB`, `100B` or a bare number of bytes (decimal units; `KiB`, `MiB` binary).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: usize = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (use e.g. 512KB, 25MB)"))?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1000,
        "KIB" => 1024,
        "MB" => 1000 * 1000,
        "MIB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        other => {
            return Err(format!(
                "{text:?} has unknown unit {other:?} (use KB or MB)"
            ));
        }
    };
    value
        .checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_and_upstreams_write() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("45s", Duration::from_secs(45)),
            ("30m", Duration::from_secs(1800)),
            ("2h", Duration::from_secs(7200)),
            ("90d", Duration::from_secs(90 * 86400)),
            ("10", Duration::from_secs(10)),
            ("7.66s", Duration::from_millis(7660)),
            ("2m59.56s", Duration::from_millis(179_560)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("1m30s", Duration::from_secs(90)),
            ("120ms", Duration::from_millis(120)),
            ("17s", Duration::from_secs(17)),
            (" 1.5 ", Duration::from_millis(1500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "5 fortnights",
            "soon",
            "5x",
            "-3",
            "-1s",
            "1e300",
            "99999999999999999999999999999h",
            "µs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("25MB").unwrap(), 25_000_000);
        assert_eq!(parse_size("512KB").unwrap(), 512_000);
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("9999999999999999999GB").is_err());
    }

    #[test]
    fn absurd_seconds_are_refused() {
        assert_eq!(secs(1.5), Some(Duration::from_millis(1500)));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert_eq!(secs(bad), None);
        }
    }
}
