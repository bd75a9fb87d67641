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

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 in UTC with nine fractional digits (Docker's
/// `RFC3339NanoFixed`, used for log timestamps).
pub fn rfc3339_nano_fixed(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// RFC 3339 as Go's `RFC3339Nano` prints it (trailing zeros of the
/// fraction dropped), or the zero time for `None`.
pub fn rfc3339_nano(ns: Option<u64>) -> String {
    let Some(ns) = ns else {
        return ZERO_TIME.to_string();
    };
    let fixed = rfc3339_nano_fixed(ns);
    let (head, frac) = fixed.split_at(19);
    let frac = frac.trim_end_matches('Z').trim_end_matches('0');
    if frac == "." {
        format!("{head}Z")
    } else {
        format!("{head}{frac}Z")
    }
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
        // 2024-02-29T12:34:56.5Z
        let ns = 1_709_210_096_500_000_000;
        assert_eq!(rfc3339_nano(Some(ns)), "2024-02-29T12:34:56.5Z");
        assert_eq!(rfc3339_nano_fixed(ns), "2024-02-29T12:34:56.500000000Z");
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
