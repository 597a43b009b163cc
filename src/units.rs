//! Sizes, rates and durations as people write them on command lines and in input files:
//! `512K`, `8M` (1024-based), `0` for "no limit" where a rate allows it, `30s`, `500ms`.

use std::time::Duration;

/// Parses a size in bytes: `1048576`, `512K`, `8M`, `1G` (1024-based; `KiB`, `MiB`, `GiB`
/// and `KB`, `MB`, `GB` mean the same here).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text, "a size (e.g. 512K, 8M, 1G)")?;
    let unit = unit.to_ascii_lowercase();
    let multiplier: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("unknown unit in `{text}` (use K, M, G or T)")),
    };
    #[expect(clippy::cast_sign_loss, reason = "the number has no sign")]
    let bytes = (value * multiplier as f64).round() as u64;
    if bytes == 0 {
        return Err(format!("`{text}` is zero"));
    }
    Ok(bytes)
}

/// Splits `12.5ms` into 12.5 and `ms` (the unit trimmed); `what` names the expected kind of
/// value in the error.
fn number_and_unit<'t>(text: &'t str, what: &str) -> Result<(f64, &'t str), String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value = number
        .parse()
        .map_err(|_| format!("`{text}` is not {what}"))?;
    Ok((value, unit.trim()))
}

/// Parses a rate in bytes per second like a size, where 0 means "no limit".
pub fn parse_rate(text: &str) -> Result<u64, String> {
    if text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
        .trim()
        == "0"
    {
        return Ok(0);
    }
    parse_size(text)
}

/// Parses `30`, `30s`, `500ms`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (value, unit) = number_and_unit(text, "a duration (e.g. 30s, 500ms, 2m)")?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_1024_based() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("8M").unwrap(), 8 << 20);
        assert_eq!(parse_size("8MiB").unwrap(), 8 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-1M").is_err());
    }

    #[test]
    fn durations_take_common_units() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
