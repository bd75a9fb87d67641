//! docker's human units, in one place: the sizes users type (`512m`, `1GiB`), the sizes
//! and durations the CLI prints (`4.26MB`, `1.5MiB`, `About an hour`) and the times it
//! prints (RFC 3339, as Go spells it). Sizes and durations follow docker's `go-units`
//! package, so berth's output reads like docker's.

use std::time::Duration;

/// Parses a size in binary units, as docker's `RAMInBytes`: `64m`, `1g`, `512k`, `2.5G`,
/// `1GiB`, `10 MB`, or a plain number of bytes. Zero, negative and overflowing sizes are
/// `None`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let shift = match t.chars().last() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => 0,
    };
    let num = if shift == 0 { t } else { &t[..t.len() - 1] };
    let num = num.trim_end();
    // A bare "i" or "b" suffix without a unit letter is not a size.
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let bytes = n * (1u64 << shift) as f64;
    (n.is_finite() && n > 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// A size in decimal units with three significant digits, as the docker CLI prints image
/// and container sizes (go-units' `HumanSizeWithPrecision(size, 3)`): `0B`, `1.23kB`,
/// `4.26MB`, `123MB`, and, as docker does, `1e+03kB` just below a megabyte.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    scaled(bytes, 1000.0, &UNITS, 3)
}

/// A size in binary units with four significant digits, as `docker stats` prints memory
/// (go-units' `BytesSize`): `0B`, `1.5KiB`, `64MiB`, `1.523GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    scaled(bytes, 1024.0, &UNITS, 4)
}

/// `bytes` divided by `base` until it is below `base` (or the units run out), printed as
/// Go's `%.{digits}g` followed by the unit: go-units' `CustomSize`.
fn scaled(bytes: u64, base: f64, units: &[&str], digits: usize) -> String {
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= base && i < units.len() - 1 {
        v /= base;
        i += 1;
    }
    format!("{}{}", go_g(v, digits), units[i])
}

/// A non-negative `v` as Go's `%.{digits}g` prints it: `digits` significant digits without
/// trailing zeros, in exponent form (`1e+03`) when the exponent is `digits` or more, or
/// below -4.
fn go_g(v: f64, digits: usize) -> String {
    let digits = digits.max(1);
    if v == 0.0 {
        return "0".into();
    }
    // Rounding to `digits` significant digits tells the exponent Go decides by.
    let e = format!("{:.*e}", digits - 1, v);
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= digits as i64 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.abs())
    } else {
        let decimals = (digits as i64 - 1 - exp) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// A duration as docker's `HumanDuration`: "Less than a second", "5 seconds",
/// "About a minute", "3 hours", "2 weeks" (hours are rounded, as Go does).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let mins = secs / 60;
    let hours = (d.as_secs_f64() / 3600.0 + 0.5) as u64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if mins == 1 {
        "About a minute".into()
    } else if mins < 60 {
        format!("{mins} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// A time (nanoseconds since the epoch) in RFC 3339, UTC, with nine fractional digits:
/// Go's `RFC3339NanoFixed`, which `docker logs -t` prints (`2024-02-29T12:34:56.500000000Z`).
pub fn rfc3339_nano_fixed(ns: u64) -> String {
    utc(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A time (nanoseconds since the epoch) in RFC 3339, UTC, as Go's `RFC3339Nano` prints it:
/// the fraction without its trailing zeros, and none when whole (`2024-02-29T12:34:56.5Z`,
/// `1970-01-01T00:00:00Z`): how docker's API spells creation and start times.
pub fn rfc3339_nano(ns: u64) -> String {
    let fixed = rfc3339_nano_fixed(ns);
    let (head, frac) = fixed.split_at(fixed.len() - 11);
    let frac = frac.trim_end_matches('Z').trim_end_matches('0');
    if frac == "." {
        format!("{head}Z")
    } else {
        format!("{head}{frac}Z")
    }
}

fn utc(ns: u64) -> chrono::DateTime<chrono::Utc> {
    let (secs, nanos) = (ns / 1_000_000_000, (ns % 1_000_000_000) as u32);
    // Every u64 of nanoseconds (up to the year 2554) is a time chrono can hold.
    chrono::DateTime::from_timestamp(secs as i64, nanos).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_dockers() {
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("10 mb"), Some(10 << 20));
        assert_eq!(parse_size("2.5k"), Some(2560));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("1p"), Some(1 << 50));
        for bad in [
            "0",
            "-1m",
            "lots",
            "",
            "m",
            "ib",
            "1x",
            "1e3",
            "nan",
            "99999999999t",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn sizes_print_like_dockers() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(1), "1B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_234), "1.23kB");
        assert_eq!(human_size(4_260_000), "4.26MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        // go-units rounds 999.5 kB to three digits and so prints an exponent.
        assert_eq!(human_size(999_500), "1e+03kB");
        assert_eq!(human_size(u64::MAX), "18.4EB");
    }

    #[test]
    fn memory_prints_like_docker_stats() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1KiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(64 << 20), "64MiB");
        assert_eq!(human_bytes(1_597_000), "1.523MiB");
        assert_eq!(human_bytes((1 << 20) - 1), "1024KiB");
        assert_eq!(human_bytes(3 << 30), "3GiB");
        assert_eq!(human_bytes(u64::MAX), "16EiB");
    }

    #[test]
    fn go_g_formats_like_go() {
        assert_eq!(go_g(0.0, 3), "0");
        assert_eq!(go_g(1.0, 3), "1");
        assert_eq!(go_g(1.5, 4), "1.5");
        assert_eq!(go_g(12.345, 3), "12.3");
        assert_eq!(go_g(999.4, 3), "999");
        assert_eq!(go_g(999.5, 3), "1e+03");
        assert_eq!(go_g(1234.5, 4), "1234");
        assert_eq!(go_g(0.00001234, 3), "1.23e-05");
    }

    #[test]
    fn times_print_as_go_spells_rfc3339() {
        assert_eq!(rfc3339_nano_fixed(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        // 2024-02-29T12:34:56.5Z: a leap day.
        let ns = 1_709_210_096_500_000_000;
        assert_eq!(rfc3339_nano(ns), "2024-02-29T12:34:56.5Z");
        assert_eq!(rfc3339_nano_fixed(ns), "2024-02-29T12:34:56.500000000Z");
        assert_eq!(
            rfc3339_nano_fixed(1_795_910_400_123_000_000),
            "2026-11-29T00:00:00.123000000Z"
        );
        assert_eq!(
            rfc3339_nano(1_000_000_001),
            "1970-01-01T00:00:01.000000001Z"
        );
        assert_eq!(rfc3339_nano(u64::MAX), "2554-07-21T23:34:33.709551615Z");
    }

    #[test]
    fn durations_print_like_dockers() {
        let s = Duration::from_secs;
        assert_eq!(human_duration(Duration::ZERO), "Less than a second");
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(30)), "30 seconds");
        assert_eq!(human_duration(s(90)), "About a minute");
        assert_eq!(human_duration(s(600)), "10 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 3600 + 1800)), "4 hours", "rounded");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(3 * 365 * 86400)), "3 years");
    }
}
