//! `--limit-rate` as a timetable, rclone's `--bwlimit` idea: `"08:00,512K 19:00,off"` limits
//! the run to 512 KiB/s from 08:00 and lifts the limit at 19:00, switching while downloads
//! run (the library's live `Downloader::set_rate_limit`). Times are the machine's local time
//! (its UTC offset as `date +%z` gives it, asked again at every switch so a daylight-saving
//! change is followed); `HH:MM:SS` works too. One rate without a time is a plain limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use haul::Downloader;

use crate::units::parse_rate;

const DAY: u32 = 24 * 3600;

/// A rate limit, or a timetable of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateSchedule {
    /// One limit for the whole run (`None`: none).
    Fixed(Option<u64>),
    /// Switches, sorted by time of day; the last one holds past midnight until the first.
    Timetable(Vec<Switch>),
}

/// From `at` (seconds after local midnight) on, the limit is `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    at: u32,
    rate: Option<u64>,
}

/// Parses `512K`, `0`, `off`, or a timetable `HH:MM[:SS],RATE ...` (space-separated).
pub fn parse_schedule(text: &str) -> Result<RateSchedule, String> {
    let rate = |value: &str| -> Result<Option<u64>, String> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        parse_rate(value).map(|r| Some(r).filter(|r| *r > 0))
    };
    if !text.contains(',') {
        return rate(text.trim()).map(RateSchedule::Fixed);
    }
    let mut switches = Vec::new();
    for part in text.split_whitespace() {
        let (time, value) = part
            .split_once(',')
            .ok_or_else(|| format!("`{part}` is not TIME,RATE (e.g. 08:00,512K)"))?;
        switches.push(Switch {
            at: parse_time(time)?,
            rate: rate(value)?,
        });
    }
    switches.sort_by_key(|s| s.at);
    if switches.windows(2).any(|w| w[0].at == w[1].at) {
        return Err(format!("`{text}` names one time twice"));
    }
    Ok(RateSchedule::Timetable(switches))
}

fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a time of day (HH:MM or HH:MM:SS)");
    let parts: Vec<u32> = text
        .split(':')
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hours, minutes, seconds) = match parts.as_slice() {
        [h, m] => (*h, *m, 0),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad()),
    };
    if hours > 23 || minutes > 59 || seconds > 59 {
        return Err(bad());
    }
    Ok(hours * 3600 + minutes * 60 + seconds)
}

impl RateSchedule {
    /// The limit at `now` (seconds after local midnight), and how long until it changes.
    pub fn at(&self, now: u32) -> (Option<u64>, Option<Duration>) {
        let switches = match self {
            Self::Fixed(rate) => return (*rate, None),
            Self::Timetable(switches) => switches,
        };
        let current = switches
            .iter()
            .rev()
            .find(|s| s.at <= now)
            .or_else(|| switches.last())
            .and_then(|s| s.rate);
        let next = switches
            .iter()
            .find(|s| s.at > now)
            .map_or_else(|| switches.first().map_or(DAY, |s| s.at + DAY), |s| s.at);
        (current, Some(Duration::from_secs(u64::from(next - now))))
    }

    /// Keeps `downloader`'s limit on the timetable until the process ends; each switch after
    /// the first is said on stderr (unless `quiet`).
    pub async fn follow(self, downloader: Downloader, quiet: bool) {
        let mut first = true;
        loop {
            let (rate, until) = self.at(local_seconds_of_day());
            if downloader.rate_limit() != rate {
                downloader.set_rate_limit(rate);
                if !first && !quiet {
                    let shown = rate.map_or_else(|| "off".to_owned(), |r| format!("{r} B/s"));
                    eprintln!("--limit-rate schedule: the limit is now {shown}");
                }
            }
            first = false;
            let Some(until) = until else {
                return;
            };
            // Never busy: at least a second between looks, and a look at least hourly.
            tokio::time::sleep(until.clamp(Duration::from_secs(1), Duration::from_secs(3600)))
                .await;
        }
    }
}

/// Seconds after local midnight now.
fn local_seconds_of_day() -> u32 {
    let utc = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let local = utc.saturating_add_signed(utc_offset_seconds());
    (local % u64::from(DAY)) as u32
}

/// The machine's UTC offset (`date +%z`: `+0100`), 0 when it cannot be told.
fn utc_offset_seconds() -> i64 {
    let Ok(output) = std::process::Command::new("date").arg("+%z").output() else {
        return 0;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let text = text.trim();
    let (sign, digits) = match text.split_at_checked(1) {
        Some(("+", digits)) => (1, digits),
        Some(("-", digits)) => (-1, digits),
        _ => return 0,
    };
    let (Some(hours), Some(minutes)) = (
        digits.get(..2).and_then(|h| h.parse::<i64>().ok()),
        digits.get(2..4).and_then(|m| m.parse::<i64>().ok()),
    ) else {
        return 0;
    };
    sign * (hours * 3600 + minutes * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timetable_is_parsed_sorted_and_read_around_the_clock() {
        let schedule = parse_schedule("19:00,off 08:00,512K 12:30:15,1M").unwrap();
        let hour = 3600;
        assert_eq!(
            schedule.at(7 * hour),
            (None, Some(Duration::from_secs(3600)))
        );
        assert_eq!(schedule.at(8 * hour).0, Some(512 * 1024));
        assert_eq!(schedule.at(12 * hour + 1815).0, Some(1 << 20));
        assert_eq!(schedule.at(20 * hour).0, None, "off from 19:00");
        assert_eq!(
            schedule.at(23 * hour).1,
            Some(Duration::from_secs(9 * 3600)),
            "next: 08:00 tomorrow"
        );
        assert_eq!(
            parse_schedule("512K").unwrap(),
            RateSchedule::Fixed(Some(512 * 1024))
        );
        assert_eq!(parse_schedule("0").unwrap(), RateSchedule::Fixed(None));
        for bad in [
            "25:00,1M",
            "08:00",
            "08:00,1M 08:00,2M",
            "8h,1M",
            "08:00,fast",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }
}
