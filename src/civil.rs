//! Calendar dates from Unix time, in UTC, with no dependency: the library formats HTTP dates
//! with it, and the CLI its log timestamps (it includes this file; nothing else is shared).

/// A moment in UTC, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub(crate) year: u64,
    /// 1 to 12.
    pub(crate) month: u64,
    /// 1 to 31.
    pub(crate) day: u64,
    pub(crate) hour: u64,
    pub(crate) minute: u64,
    pub(crate) second: u64,
    /// 0 for Thursday (1970-01-01 was one), up to 6 for Wednesday.
    pub(crate) weekday_from_thursday: u64,
}

/// The civil date and time of `seconds` since the Unix epoch (Howard Hinnant's algorithm,
/// for dates from 1970 on).
pub(crate) fn civil(seconds: u64) -> Civil {
    let days = seconds / 86_400;
    let in_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    Civil {
        year: year_of_era + era * 400 + u64::from(month <= 2),
        month,
        day,
        hour: in_day / 3600,
        minute: in_day % 3600 / 60,
        second: in_day % 60,
        weekday_from_thursday: days % 7,
    }
}
