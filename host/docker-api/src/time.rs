//! Docker's time spellings: RFC 3339 with nanoseconds, `since`/`until`
//! query values, and the human durations of `docker ps`'s Status column.

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero time, which Docker prints for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub use berth_units::rfc3339_nano_fixed;

/// RFC 3339 as Go's `RFC3339Nano` prints it ([`berth_units::rfc3339_nano`]), or the zero
/// time for `None`.
pub fn rfc3339_nano(ns: Option<u64>) -> String {
    ns.map_or_else(|| ZERO_TIME.to_string(), berth_units::rfc3339_nano)
}

/// Parses a `since`/`until` value: Unix seconds with an optional
/// fraction ("1700000000.5", "1700000000.000000001"). Docker clients
/// convert durations and dates to this form before sending.
pub fn parse_timestamp(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: u64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(secs * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_nano(None), ZERO_TIME);
        assert_eq!(rfc3339_nano(Some(0)), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn parses_timestamps() {
        assert_eq!(parse_timestamp("12"), Some(12_000_000_000));
        assert_eq!(parse_timestamp("12.5"), Some(12_500_000_000));
        assert_eq!(parse_timestamp("1.000000001"), Some(1_000_000_001));
        assert_eq!(parse_timestamp("x"), None);
        assert_eq!(parse_timestamp(""), None);
    }
}
