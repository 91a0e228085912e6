//! The Polish calendar the legal deadlines count in: business days (Monday to Friday, not a
//! Polish public holiday) and Polish time (CET/CEST by the EU rule), with no time zone database.
//!
//! Public holidays per the Act on public holidays (Ustawa o dniach wolnych od pracy, 1951, as
//! amended): the fixed ones, 24 December from 2025, and the movable ones from Easter (Easter
//! Sunday and Monday, Pentecost Sunday, Corpus Christi). No crate in reach keeps the Polish
//! list (the registries' lists name none for Rust), so it is this short function, tested
//! against 2025–2027's dates. What the deadlines themselves are: [`crate::offline`].

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc, Weekday};

/// Easter Sunday (Gregorian, anonymous algorithm).
pub fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).expect("a valid Easter date")
}

/// Polish public holidays (Ustawa o dniach wolnych od pracy; 24 December since 2025).
pub fn is_public_holiday(d: NaiveDate) -> bool {
    let fixed = matches!(
        (d.month(), d.day()),
        (1, 1) | (1, 6) | (5, 1) | (5, 3) | (8, 15) | (11, 1) | (11, 11) | (12, 25) | (12, 26)
    ) || (d.month() == 12 && d.day() == 24 && d.year() >= 2025);
    if fixed {
        return true;
    }
    let e = easter(d.year());
    // Easter Sunday, Easter Monday, Pentecost Sunday, Corpus Christi.
    [e, e + Duration::days(1), e + Duration::days(49), e + Duration::days(60)].contains(&d)
}

pub fn is_business_day(d: NaiveDate) -> bool {
    !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !is_public_holiday(d)
}

/// The first business day after `d`.
pub fn next_business_day(d: NaiveDate) -> NaiveDate {
    let mut n = d + Duration::days(1);
    while !is_business_day(n) {
        n += Duration::days(1);
    }
    n
}

/// The last Sunday of `month` at 01:00 UTC: when Poland's clocks change (EU rule).
fn last_sunday_0100_utc(year: i32, month: u32) -> DateTime<Utc> {
    let mut d = NaiveDate::from_ymd_opt(year, month + 1, 1).expect("valid") - Duration::days(1);
    while d.weekday() != Weekday::Sun {
        d -= Duration::days(1);
    }
    Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).expect("valid"))
}

/// Poland's offset from UTC at instant `t`: +2 h in summer time, +1 h otherwise.
pub fn poland_offset(t: DateTime<Utc>) -> Duration {
    let y = t.year();
    if t >= last_sunday_0100_utc(y, 3) && t < last_sunday_0100_utc(y, 10) {
        Duration::hours(2)
    } else {
        Duration::hours(1)
    }
}

/// Midnight at the start of `d`, Polish time, as an instant.
pub fn poland_midnight(d: NaiveDate) -> DateTime<Utc> {
    let local: NaiveDateTime = d.and_hms_opt(0, 0, 0).expect("valid");
    // The offset of the instant itself; clocks never change at midnight in Poland.
    let guess = Utc.from_utc_datetime(&local) - Duration::hours(1);
    Utc.from_utc_datetime(&(local - poland_offset(guess)))
}

/// The calendar day in Poland at instant `t`.
pub fn poland_date(t: DateTime<Utc>) -> NaiveDate {
    (t + poland_offset(t)).date_naive()
}

/// The `n`th business day after `d` (n = 1: the next business day).
pub fn business_days_after(d: NaiveDate, n: u32) -> NaiveDate {
    (0..n).fold(d, |day, _| next_business_day(day))
}

/// The end of day `d` in Poland: the instant the next day begins.
pub fn end_of_day(d: NaiveDate) -> DateTime<Utc> {
    poland_midnight(d + Duration::days(1))
}

/// The offline24 limit for an invoice issued on `issue_date` to be in KSeF: the end of the next
/// business day after it, Polish time (the instant the day after that business day begins).
/// Declared outages move it: [`crate::offline::legal_deadline`].
pub fn legal_deadline(issue_date: NaiveDate) -> DateTime<Utc> {
    end_of_day(next_business_day(issue_date))
}

/// Whether an invoice issued on `issue_date` and not yet in KSeF at `now` is offline: its issue
/// day is over in Poland, so KSeF will mark it `Offline` when it arrives.
pub fn is_offline_at(issue_date: NaiveDate, now: DateTime<Utc>) -> bool {
    issue_date < poland_date(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn easter_dates() {
        assert_eq!(easter(2024), d(2024, 3, 31));
        assert_eq!(easter(2025), d(2025, 4, 20));
        assert_eq!(easter(2026), d(2026, 4, 5));
        assert_eq!(easter(2027), d(2027, 3, 28));
    }

    #[test]
    fn business_days_skip_weekends_and_polish_holidays() {
        // Friday 2026-01-02 -> Monday 2026-01-05; Monday 2026-01-05 -> Wednesday 7th (6th: Epiphany).
        assert_eq!(next_business_day(d(2026, 1, 2)), d(2026, 1, 5));
        assert_eq!(next_business_day(d(2026, 1, 5)), d(2026, 1, 7));
        // Easter Monday 2026-04-06, Corpus Christi 2026-06-04.
        assert_eq!(next_business_day(d(2026, 4, 3)), d(2026, 4, 7));
        assert_eq!(next_business_day(d(2026, 6, 3)), d(2026, 6, 5));
        // Christmas Eve is a holiday since 2025: Tue 2026-12-22 -> Wed 23rd, Wed 23rd -> Mon 28th.
        assert_eq!(next_business_day(d(2026, 12, 23)), d(2026, 12, 28));
        assert!(is_business_day(d(2024, 12, 24)));
        assert!(!is_business_day(d(2025, 12, 24)));
    }

    #[test]
    fn the_deadline_ends_at_midnight_polish_time() {
        // Issued Thursday 2026-02-12 (winter, UTC+1): due by the end of Friday 13th, 23:00 UTC.
        assert_eq!(legal_deadline(d(2026, 2, 12)).to_rfc3339(), "2026-02-13T23:00:00+00:00");
        // Issued Friday 2026-07-10 (summer, UTC+2): due by the end of Monday 13th, 22:00 UTC.
        assert_eq!(legal_deadline(d(2026, 7, 10)).to_rfc3339(), "2026-07-13T22:00:00+00:00");
        // Across the spring clock change: issued Friday 2026-03-27, due end of Monday 30th (CEST).
        assert_eq!(legal_deadline(d(2026, 3, 27)).to_rfc3339(), "2026-03-30T22:00:00+00:00");
    }

    #[test]
    fn polish_calendar_day() {
        let late = Utc.with_ymd_and_hms(2026, 2, 12, 23, 30, 0).unwrap();
        assert_eq!(poland_date(late), d(2026, 2, 13));
        assert!(is_offline_at(d(2026, 2, 12), late));
        assert!(!is_offline_at(d(2026, 2, 13), late));
    }

    /// Every Polish public holiday of 2026 and 2027, from the statutory list (the movable ones:
    /// Easter 5.04.2026 and 28.03.2027, Pentecost 24.05.2026 and 16.05.2027, Corpus Christi
    /// 4.06.2026 and 27.05.2027), and no other day.
    #[test]
    fn the_holidays_of_2026_and_2027_exactly() {
        for year in [2026, 2027] {
            let expected: Vec<NaiveDate> = match year {
                2026 => vec![
                    d(2026, 1, 1),
                    d(2026, 1, 6),
                    d(2026, 4, 5),
                    d(2026, 4, 6),
                    d(2026, 5, 1),
                    d(2026, 5, 3),
                    d(2026, 5, 24),
                    d(2026, 6, 4),
                    d(2026, 8, 15),
                    d(2026, 11, 1),
                    d(2026, 11, 11),
                    d(2026, 12, 24),
                    d(2026, 12, 25),
                    d(2026, 12, 26),
                ],
                _ => vec![
                    d(2027, 1, 1),
                    d(2027, 1, 6),
                    d(2027, 3, 28),
                    d(2027, 3, 29),
                    d(2027, 5, 1),
                    d(2027, 5, 3),
                    d(2027, 5, 16),
                    d(2027, 5, 27),
                    d(2027, 8, 15),
                    d(2027, 11, 1),
                    d(2027, 11, 11),
                    d(2027, 12, 24),
                    d(2027, 12, 25),
                    d(2027, 12, 26),
                ],
            };
            let found: Vec<NaiveDate> = d(year, 1, 1)
                .iter_days()
                .take_while(|x| x.year() == year)
                .filter(|x| is_public_holiday(*x))
                .collect();
            assert_eq!(found, expected, "{year}");
        }
        // Easter Monday 2027 (Mon 29.03): Friday 26.03 -> Tuesday 30.03.
        assert_eq!(next_business_day(d(2027, 3, 26)), d(2027, 3, 30));
        // Corpus Christi 2027 (Thu 27.05): Wednesday 26.05 -> Friday 28.05.
        assert_eq!(next_business_day(d(2027, 5, 26)), d(2027, 5, 28));
        // 24 December 2027 is a Friday: Thursday 23.12 -> Monday 27.12.
        assert_eq!(next_business_day(d(2027, 12, 23)), d(2027, 12, 27));
        // Seven business days after Tuesday 22.12.2026: 23, 28, 29, 30, 31.12, 4.01, 5.01.
        assert_eq!(business_days_after(d(2026, 12, 22), 7), d(2027, 1, 5));
    }
}
