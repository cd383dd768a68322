//! Human durations in config and control headers: `90s`, `15m`, `24h`, `30d`.

use std::time::Duration;

/// Parses `<number><unit>`, or several in a row (`1h30m`, `24h1s`), with
/// unit one of `ms`, `s`, `m`, `h`, `d`, `w`, `y` (365 days). Returns a
/// message naming what was expected on error.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration; write e.g. `30s`, `15m`, `24h`, `30d`".into());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` does not start with a whole number"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| format!("`{text}`: number too large"))?;
        let after = &rest[digits..];
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let unit = &after[..unit_len];
        let part = match unit {
            "" => return Err(format!("`{text}` has no unit; write e.g. `30s`, `15m`, `24h`, `30d`")),
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86_400),
            "w" => Duration::from_secs(n * 7 * 86_400),
            "y" => Duration::from_secs(n * 365 * 86_400),
            _ => return Err(format!("`{text}` has unknown unit `{unit}`; use ms, s, m, h, d, w or y")),
        };
        total += part;
        rest = &after[unit_len..];
    }
    Ok(total)
}

/// Milliseconds of a duration as the i64 used for event times.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse("2d").unwrap(), Duration::from_secs(172_800));
    }

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("24h1s").unwrap(), Duration::from_secs(86_401));
        assert!(parse("1h30").unwrap_err().contains("no unit"));
    }

    #[test]
    fn rejects_missing_or_unknown_unit() {
        assert!(parse("15").unwrap_err().contains("no unit"));
        assert!(parse("3 fortnights").is_err());
    }
}
