//! Human durations in config and control headers: `90s`, `15m`, `24h`, `30d`.

use std::time::Duration;

/// Parses `<number><unit>` with unit one of `ms`, `s`, `m`, `h`, `d`, `w`, `y`
/// (365 days). Returns a message naming what was expected on error.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit; write e.g. `30s`, `15m`, `24h`, `30d`"))?;
    let (num, unit) = text.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "y" => 365 * 86_400,
        _ => return Err(format!("`{text}` has unknown unit `{unit}`; use ms, s, m, h, d, w or y")),
    };
    Ok(Duration::from_secs(n * secs))
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
    fn rejects_missing_or_unknown_unit() {
        assert!(parse("15").unwrap_err().contains("no unit"));
        assert!(parse("3 fortnights").is_err());
    }
}
