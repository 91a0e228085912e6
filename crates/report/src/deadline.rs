//! When an invoice must be in KSeF, by law.
//!
//! An invoice sent online is issued when KSeF receives it. One whose issue date (`P_1`) is a
//! calendar day earlier than the day it reaches KSeF is marked offline by KSeF itself, and an
//! offline invoice (offline24) must be sent **by the next business day after its issue date**
//! (VAT Act art. 106nda; API-NOTES §10). So for every document without a KSeF number the relay
//! knows a hard limit: the end of the next business day (Mon–Fri, not a Polish public holiday)
//! after `P_1`, Polish time. Declared KSeF outages (unavailability: next business day after it
//! ends; failure: 7 business days) move the limit later; the relay does not know about those
//! declarations, so the metric it derives is the strict one and can only over-warn.

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

/// The legal limit for an invoice issued on `issue_date` to be in KSeF: the end of the next
/// business day after it, Polish time (the instant the day after that business day begins).
pub fn legal_deadline(issue_date: NaiveDate) -> DateTime<Utc> {
    poland_midnight(next_business_day(issue_date) + Duration::days(1))
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
}
