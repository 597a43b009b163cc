//! Reading the parts of an HTTP response a transfer decides on: `Content-Range`, `Retry-After`,
//! and the validators (`ETag`, `Last-Modified`, total length).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, LAST_MODIFIED, RETRY_AFTER};

use crate::storage::state::Validators;

/// A parsed `Content-Range: bytes START-END/TOTAL` (RFC 9110 §14.4), `END` inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub(crate) start: u64,
    /// One past the last byte sent.
    pub(crate) end: u64,
    /// The entity's length; `None` for `*`.
    pub(crate) total: Option<u64>,
}

/// Parses a `Content-Range` value; `None` when it is malformed or inconsistent.
pub(crate) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.trim().split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let last: u64 = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        digits => Some(digits.parse::<u64>().ok()?),
    };
    if last < start || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange {
        start,
        end: last.checked_add(1)?,
        total,
    })
}

/// The `Content-Range` header of a response, parsed.
pub(crate) fn content_range(headers: &HeaderMap) -> Option<ContentRange> {
    parse_content_range(headers.get(CONTENT_RANGE)?.to_str().ok()?)
}

/// The entity length of a `416` answer's `Content-Range: bytes */LENGTH`.
pub(crate) fn unsatisfied_total(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes")?
        .trim_start()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}

/// The `Content-Length` header (of a `HEAD` answer, whose body is empty).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The validators of a response; `total_bytes` is left to the caller, who knows whether the
/// response is whole or partial.
pub(crate) fn validators(headers: &HeaderMap, total_bytes: Option<u64>) -> Validators {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Validators {
        total_bytes,
        etag: text(ETAG),
        last_modified: text(LAST_MODIFIED),
    }
}

/// `Retry-After` as a delay: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now)))
}

/// Parses an HTTP date into seconds since the Unix epoch, in any of the three forms RFC 9110
/// §5.6.7 says a recipient must accept: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`). The weekday is
/// not checked (a server that gets it wrong still means the date). Dates before 1970 are
/// `None`.
pub(crate) fn parse_http_date(value: &str) -> Option<u64> {
    let value = value.trim();
    let (day, month, year, clock) = if let Some((_weekday, rest)) = value.split_once(", ") {
        let mut parts = rest.split_ascii_whitespace();
        let date = parts.next()?;
        let (day, month, year) = match date.split('-').collect::<Vec<_>>()[..] {
            // RFC 850: `06-Nov-94`; a two-digit year is in the last 100 years (RFC 9110).
            [day, month, year] if year.len() == 2 => {
                let short: u64 = year.parse().ok()?;
                (
                    day,
                    month,
                    if short < 70 {
                        2000 + short
                    } else {
                        1900 + short
                    },
                )
            }
            [day, month, year] => (day, month, year.parse().ok()?),
            // IMF-fixdate: `06 Nov 1994`.
            _ => (date, parts.next()?, parts.next()?.parse().ok()?),
        };
        let clock = parts.next()?;
        if parts.next()? != "GMT" || parts.next().is_some() {
            return None;
        }
        (day, month, year, clock)
    } else {
        // asctime: `Sun Nov  6 08:49:37 1994`.
        let mut parts = value.split_ascii_whitespace();
        let _weekday = parts.next()?;
        let month = parts.next()?;
        let day = parts.next()?;
        let clock = parts.next()?;
        let year = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        (day, month, year, clock)
    };
    let day: u64 = day.parse().ok()?;
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let mut clock = clock.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if clock.next().is_some()
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970 on.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y % 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Formats seconds since the Unix epoch as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn format_http_date(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let at = crate::civil::civil(seconds);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[at.weekday_from_thursday as usize],
        at.day,
        MONTHS[(at.month - 1) as usize],
        at.year,
        at.hour,
        at.minute,
        at.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_reject_nonsense() {
        let ok = |v: &str, start, end, total| {
            assert_eq!(
                parse_content_range(v),
                Some(ContentRange { start, end, total }),
                "{v}"
            );
        };
        ok("bytes 0-99/100", 0, 100, Some(100));
        ok("bytes 100-199/1000", 100, 200, Some(1000));
        ok("bytes 5-5/*", 5, 6, None);
        ok("bytes  7-9/10", 7, 10, Some(10));
        for bad in [
            "bytes 10-5/100",
            "bytes 0-100/100",
            "bytes */100",
            "items 0-1/2",
            "bytes 0-1",
            "bytes a-b/c",
            "bytes -1-2/3",
            "",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn http_dates_parse_to_unix_seconds() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sat, 29 Feb 2020 12:00:00 GMT"),
            Some(1_582_977_600)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777),
            "RFC 850"
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777),
            "asctime"
        );
        assert_eq!(
            parse_http_date("Sun Nov 16 08:49:37 1994"),
            Some(784_111_777 + 10 * 86_400)
        );
        assert_eq!(parse_http_date("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing"),
            None
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn http_dates_format_and_parse_back() {
        for seconds in [0, 784_111_777, 1_582_977_600, 1_795_000_000] {
            assert_eq!(parse_http_date(&format_http_date(seconds)), Some(seconds));
        }
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Thu, 01 Jan 1970 00:00:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
