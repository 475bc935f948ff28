//! Times as people type and read them: RFC 3339 in UTC (`2025-11-29T16:03:01.123Z`), unix
//! milliseconds, `now`, or a duration ago (`-2h`, `now-30m`).

use std::time::{Duration, UNIX_EPOCH};

/// The last millisecond RFC 3339 can show (9999-12-31T23:59:59.999Z).
const RFC3339_MS_MAX: i64 = 253_402_300_799_999;

/// RFC 3339 with milliseconds, UTC; times RFC 3339 cannot show (an unbounded window's end)
/// are shown as raw milliseconds.
pub fn format_ms(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(positive) if ms <= RFC3339_MS_MAX => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(positive)).to_string()
        }
        _ => format!("{ms} (unix ms)"),
    }
}

/// Parses a time given on the command line, relative to `now_ms` where it says so.
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now_ms);
    }
    if let Some(ago) = text.strip_prefix("now-").or_else(|| text.strip_prefix('-')) {
        let ago = humantime::parse_duration(ago).map_err(|e| format!("{text:?}: {e}"))?;
        let ago_ms = i64::try_from(ago.as_millis()).map_err(|_| format!("{text:?} is too far back"))?;
        return Ok(now_ms.saturating_sub(ago_ms));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().map_err(|e| format!("{text:?}: {e}"));
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| {
        format!("{text:?} is not a time: use RFC 3339 (2025-11-29T16:03:01Z), unix milliseconds, now, or now-2h")
    })?;
    let since = time.duration_since(UNIX_EPOCH).map_err(|_| format!("{text:?} is before 1970"))?;
    i64::try_from(since.as_millis()).map_err(|_| format!("{text:?} is too far ahead"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats_and_relative_times() {
        let ms = 1_764_432_181_123;
        assert_eq!(format_ms(ms), "2025-11-29T16:03:01.123Z");
        assert_eq!(parse_time(&format_ms(ms), 0), Ok(ms));
        assert_eq!(parse_time("2025-11-29T16:03:01Z", 0), Ok(1_764_432_181_000));
        assert_eq!(parse_time("1764432181123", 0), Ok(ms));
        assert_eq!(parse_time("now", ms), Ok(ms));
        assert_eq!(parse_time("-2h", ms), Ok(ms - 7_200_000));
        assert_eq!(parse_time("now-30m", ms), Ok(ms - 1_800_000));
        assert!(parse_time("yesterday", ms).is_err());
        assert_eq!(format_ms(i64::MAX), "9223372036854775807 (unix ms)");
        assert_eq!(format_ms(-1), "-1 (unix ms)");
    }
}
