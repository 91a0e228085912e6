//! XSD built-in simple types as the FA(3) schemas use them: whitespace normalisation, lexical
//! checks, and value-space comparison for the range, digit and enumeration facets.
//!
//! Numbers are compared as decimal strings, never as `f64`: `totalDigits`/`fractionDigits` and
//! amounts such as `99999999999999.99` must not lose a digit.

use std::borrow::Cow;
use std::cmp::Ordering;

/// The `whiteSpace` facet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteSpace {
    Preserve,
    Replace,
    Collapse,
}

impl WhiteSpace {
    /// Normalises a lexical value the way a validator must before applying any facet.
    pub fn apply(self, s: &str) -> Cow<'_, str> {
        let is_ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
        match self {
            WhiteSpace::Preserve => Cow::Borrowed(s),
            WhiteSpace::Replace if !s.bytes().any(|c| matches!(c, b'\t' | b'\n' | b'\r')) => Cow::Borrowed(s),
            WhiteSpace::Replace => Cow::Owned(s.chars().map(|c| if is_ws(c) { ' ' } else { c }).collect()),
            // No whitespace at all (numbers, codes, dates): nothing to collapse. (A first pass
            // that stops at the first space, cheaper here than the loop below.)
            WhiteSpace::Collapse if s.bytes().all(|c| c > b' ') => Cow::Borrowed(s),
            WhiteSpace::Collapse => {
                // One pass: already collapsed unless it has a tab/CR/LF, a doubled space, or a
                // space at either end.
                let b = s.as_bytes();
                let mut prev_space = true;
                let mut already = true;
                for &c in b {
                    match c {
                        b'\t' | b'\n' | b'\r' => {
                            already = false;
                            break;
                        }
                        b' ' if prev_space => {
                            already = false;
                            break;
                        }
                        _ => prev_space = c == b' ',
                    }
                }
                already &= b.last().is_none_or(|&c| c != b' ');
                if already {
                    Cow::Borrowed(s)
                } else {
                    Cow::Owned(s.split(is_ws).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
                }
            }
        }
    }
}

/// The XSD built-in types the FA(3) schemas derive from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    String,
    NormalizedString,
    Token,
    Decimal,
    Integer,
    Int,
    Byte,
    NonNegativeInteger,
    Date,
    DateTime,
    GYear,
}

impl Builtin {
    pub fn from_local_name(name: &str) -> Option<Builtin> {
        Some(match name {
            "string" => Builtin::String,
            "normalizedString" => Builtin::NormalizedString,
            "token" => Builtin::Token,
            "decimal" => Builtin::Decimal,
            "integer" => Builtin::Integer,
            "int" => Builtin::Int,
            "byte" => Builtin::Byte,
            "nonNegativeInteger" => Builtin::NonNegativeInteger,
            "date" => Builtin::Date,
            "dateTime" => Builtin::DateTime,
            "gYear" => Builtin::GYear,
            _ => return None,
        })
    }

    pub fn whitespace(self) -> WhiteSpace {
        match self {
            Builtin::String => WhiteSpace::Preserve,
            Builtin::NormalizedString => WhiteSpace::Replace,
            _ => WhiteSpace::Collapse,
        }
    }

    /// Whether the type counts characters for the length facets.
    pub fn is_stringy(self) -> bool {
        matches!(self, Builtin::String | Builtin::NormalizedString | Builtin::Token)
    }

    /// Parses a whitespace-normalised lexical value; `Err` carries a plain description of the
    /// expected form (Polish, English).
    pub fn parse(self, s: &str) -> Result<Value, (&'static str, &'static str)> {
        match self {
            Builtin::String | Builtin::NormalizedString | Builtin::Token => Ok(Value::Str(s.to_string())),
            Builtin::Decimal => Decimal::parse(s)
                .map(Value::Num)
                .ok_or(("liczbą dziesiętną (np. 123.45)", "a decimal number (e.g. 123.45)")),
            Builtin::Integer | Builtin::Int | Builtin::Byte | Builtin::NonNegativeInteger => {
                let d = Decimal::parse_integer(s).ok_or(("liczbą całkowitą", "a whole number"))?;
                // The bounds, parsed once per process.
                static BOUNDS: std::sync::OnceLock<[Decimal; 5]> = std::sync::OnceLock::new();
                let [int_lo, int_hi, byte_lo, byte_hi, zero] =
                    BOUNDS.get_or_init(|| ["-2147483648", "2147483647", "-128", "127", "0"].map(|v| Decimal::parse(v).expect("literal")));
                let (lo, hi) = match self {
                    Builtin::Int => (Some(int_lo), Some(int_hi)),
                    Builtin::Byte => (Some(byte_lo), Some(byte_hi)),
                    Builtin::NonNegativeInteger => (Some(zero), None),
                    _ => (None, None),
                };
                let out_of_range = lo.is_some_and(|lo| d.cmp(lo) == Ordering::Less) || hi.is_some_and(|hi| d.cmp(hi) == Ordering::Greater);
                if out_of_range {
                    return Err(match self {
                        Builtin::Byte => ("liczbą całkowitą od -128 do 127", "a whole number from -128 to 127"),
                        Builtin::NonNegativeInteger => ("liczbą całkowitą nieujemną", "a non-negative whole number"),
                        _ => ("liczbą całkowitą w zakresie typu int", "a whole number within the int range"),
                    });
                }
                Ok(Value::Num(d))
            }
            Builtin::Date => parse_date(s)
                .map(Value::Time)
                .ok_or(("datą w formacie RRRR-MM-DD", "a date in the form YYYY-MM-DD")),
            Builtin::DateTime => parse_date_time(s).map(Value::Time).ok_or((
                "datą i godziną w formacie RRRR-MM-DDTgg:mm:ss",
                "a date and time in the form YYYY-MM-DDThh:mm:ss",
            )),
            Builtin::GYear => parse_g_year(s)
                .map(Value::Time)
                .ok_or(("rokiem w formacie RRRR", "a year in the form YYYY")),
        }
    }
}

/// A value in its value space, for facets that compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Num(Decimal),
    Time(TimeKey),
}

impl Value {
    /// Orders two values of the same primitive type; `None` when they cannot be compared.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Num(a), Value::Num(b)) => Some(a.cmp(b)),
            (Value::Time(a), Value::Time(b)) => a.compare(b),
            _ => None,
        }
    }
}

/// A run of ASCII digits of any length, held inline when short (every amount and date in an
/// invoice), so parsing a value allocates nothing.
#[derive(Clone)]
enum Digits {
    Inline { len: u8, buf: [u8; Digits::INLINE] },
    Heap(Box<str>),
}

impl Digits {
    const INLINE: usize = 30;

    fn new(s: &str) -> Digits {
        if s.len() <= Digits::INLINE {
            let mut buf = [0u8; Digits::INLINE];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Digits::Inline { len: s.len() as u8, buf }
        } else {
            Digits::Heap(s.into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Digits::Inline { len, buf } => &buf[..*len as usize],
            Digits::Heap(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // Only ever filled from a `&str` of ASCII digits.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    fn len(&self) -> usize {
        self.as_bytes().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for Digits {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Digits {}

impl std::fmt::Debug for Digits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An exact decimal: sign, integer digits without leading zeros, fraction digits without
/// trailing zeros. Zero is never negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    int: Digits,
    frac: Digits,
}

impl Decimal {
    /// `[+-]?(\d+(\.\d*)?|\.\d+)`, ASCII digits only.
    pub fn parse(s: &str) -> Option<Decimal> {
        let (negative, body) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        // Split at the first '.', on bytes (short values: a scan beats a searcher's set-up).
        let b = body.as_bytes();
        let (int, frac) = match b.iter().position(|&c| c == b'.') {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => (b, &b[..0]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let lead = int.iter().take_while(|&&c| c == b'0').count();
        let trail = frac.iter().rev().take_while(|&&c| c == b'0').count();
        // ASCII digits, so any cut is a `str` boundary.
        let int = Digits::new(&body[lead..int.len()]);
        let frac_start = body.len() - frac.len();
        let frac = Digits::new(&body[frac_start..body.len() - trail]);
        let zero = int.is_empty() && frac.is_empty();
        Some(Decimal {
            negative: negative && !zero,
            int,
            frac,
        })
    }

    /// `[+-]?\d+`.
    pub fn parse_integer(s: &str) -> Option<Decimal> {
        if s.contains('.') {
            return None;
        }
        Decimal::parse(s)
    }

    /// Significant digits, as the `totalDigits` facet counts them (at least one).
    pub fn total_digits(&self) -> usize {
        (self.int.len() + self.frac.len()).max(1)
    }

    pub fn fraction_digits(&self) -> usize {
        self.frac.len()
    }

    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Value in hundredths (grosze), rounded half away from zero; `None` when too big.
    pub fn to_hundredths(&self) -> Option<i128> {
        if self.int.len() > 30 {
            return None;
        }
        let int: i128 = if self.int.is_empty() { 0 } else { self.int.as_str().parse().ok()? };
        // The first three fraction digits, missing ones as zeros.
        let f = self.frac.as_bytes();
        let digit = |i: usize| i128::from(f.get(i).map_or(0, |&b| b - b'0'));
        let cents: i128 = digit(0) * 10 + digit(1);
        let round_up = digit(2) >= 5;
        let v = int * 100 + cents + i128::from(round_up);
        Some(if self.negative { -v } else { v })
    }

    fn cmp_magnitude(&self, other: &Decimal) -> Ordering {
        self.int
            .len()
            .cmp(&other.int.len())
            .then_with(|| self.int.as_bytes().cmp(other.int.as_bytes()))
            .then_with(|| self.frac.as_bytes().cmp(other.frac.as_bytes()))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A date, date-time or year on a timeline: seconds from an epoch in local time, the
/// fraction of a second (digits without trailing zeros), and the timezone offset in minutes
/// when one was given. Dates count from their first instant, years from 1 January.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeKey {
    kind: u8,
    secs: i128,
    frac: Digits,
    tz: Option<i32>,
}

/// The most a timezone can shift a value without one (XSD: ±14:00).
const FOURTEEN_HOURS: i128 = 14 * 3600;

impl TimeKey {
    /// The XSD 1.0 partial order (§3.2.7.4): a value without a timezone is only ordered
    /// against one with a timezone when they are more than 14 hours apart.
    fn compare(&self, other: &TimeKey) -> Option<Ordering> {
        if self.kind != other.kind {
            return None;
        }
        let utc = |k: &TimeKey| k.secs - i128::from(k.tz.unwrap_or(0)) * 60;
        fn at(secs: i128, k: &TimeKey) -> (i128, &[u8]) {
            (secs, k.frac.as_bytes())
        }
        match (self.tz, other.tz) {
            (Some(_), Some(_)) | (None, None) => Some(at(utc(self), self).cmp(&at(utc(other), other))),
            (Some(_), None) => {
                let p = at(utc(self), self);
                if p < at(other.secs - FOURTEEN_HOURS, other) {
                    Some(Ordering::Less)
                } else if p > at(other.secs + FOURTEEN_HOURS, other) {
                    Some(Ordering::Greater)
                } else {
                    None
                }
            }
            (None, Some(_)) => other.compare(self).map(Ordering::reverse),
        }
    }
}

/// Days from 0001-01-01 in the proleptic Gregorian calendar; XSD 1.0 has no year zero.
fn days_from_civil(year: i64, month: u8, day: u8) -> i128 {
    let y = i128::from(if year < 0 { year + 1 } else { year }) - i128::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i128::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i128::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `-?YYYY` with at least four digits, no leading zero beyond four, and not year zero.
fn parse_year(s: &str) -> Option<(i64, &str)> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let len = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    if !(4..=12).contains(&len) || (len > 4 && rest.starts_with('0')) {
        return None;
    }
    let year: i64 = rest[..len].parse().ok()?;
    if year == 0 {
        return None;
    }
    Some((if neg { -year } else { year }, &rest[len..]))
}

fn parse_tz(s: &str) -> Option<Option<i32>> {
    if s.is_empty() {
        return Some(None);
    }
    if s == "Z" {
        return Some(Some(0));
    }
    let b = s.as_bytes();
    if b.len() != 6 || !(b[0] == b'+' || b[0] == b'-') || b[3] != b':' || !digits(&s[1..3]) || !digits(&s[4..6]) {
        return None;
    }
    let (h, m): (i32, i32) = (s[1..3].parse().ok()?, s[4..6].parse().ok()?);
    if h > 14 || m > 59 || (h == 14 && m != 0) {
        return None;
    }
    let minutes = h * 60 + m;
    Some(Some(if b[0] == b'-' { -minutes } else { minutes }))
}

fn is_leap(year: i64) -> bool {
    // XSD 1.0 years have no year zero: -0001 is the proleptic leap year 0.
    let y = if year < 0 { year + 1 } else { year };
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

fn parse_ymd(s: &str) -> Option<(i64, u8, u8, &str)> {
    let (year, rest) = parse_year(s)?;
    let b = rest.as_bytes();
    if b.len() < 6 || b[0] != b'-' || b[3] != b'-' || !digits(&rest[1..3]) || !digits(&rest[4..6]) {
        return None;
    }
    let month: u8 = rest[1..3].parse().ok()?;
    let day: u8 = rest[4..6].parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some((year, month, day, &rest[6..]))
}

pub fn parse_date(s: &str) -> Option<TimeKey> {
    let (year, month, day, rest) = parse_ymd(s)?;
    Some(TimeKey {
        kind: 0,
        secs: days_from_civil(year, month, day) * 86_400,
        frac: Digits::new(""),
        tz: parse_tz(rest)?,
    })
}

pub fn parse_date_time(s: &str) -> Option<TimeKey> {
    let (year, month, day, rest) = parse_ymd(s)?;
    let rest = rest.strip_prefix('T')?;
    let b = rest.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' || !digits(&rest[0..2]) || !digits(&rest[3..5]) || !digits(&rest[6..8]) {
        return None;
    }
    let (h, m, sec): (u8, u8, u8) = (rest[0..2].parse().ok()?, rest[3..5].parse().ok()?, rest[6..8].parse().ok()?);
    let mut tail = &rest[8..];
    let mut frac = "";
    if let Some(f) = tail.strip_prefix('.') {
        let n = f.bytes().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        frac = &f[..n];
        tail = &f[n..];
    }
    let frac = frac.trim_end_matches('0');
    let midnight_end = h == 24 && m == 0 && sec == 0 && frac.is_empty();
    if !(h < 24 || midnight_end) || m > 59 || sec > 59 {
        return None;
    }
    Some(TimeKey {
        kind: 1,
        secs: days_from_civil(year, month, day) * 86_400 + i128::from(h) * 3600 + i128::from(m) * 60 + i128::from(sec),
        frac: Digits::new(frac),
        tz: parse_tz(tail)?,
    })
}

pub fn parse_g_year(s: &str) -> Option<TimeKey> {
    let (year, rest) = parse_year(s)?;
    Some(TimeKey {
        kind: 2,
        secs: days_from_civil(year, 1, 1) * 86_400,
        frac: Digits::new(""),
        tz: parse_tz(rest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_facets() {
        assert_eq!(WhiteSpace::Collapse.apply("  a \t b\n"), "a b");
        assert_eq!(WhiteSpace::Replace.apply("a\tb\n"), "a b ");
        assert_eq!(WhiteSpace::Preserve.apply(" a "), " a ");
        // Every string of up to 6 of these characters against the definitions (XSD 4.3.6).
        let alphabet = [' ', '\t', '\n', '\r', 'a', '\u{1}', 'ó'];
        let ws = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r');
        let mut strings = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = strings
                .iter()
                .filter(|s| s.chars().count() == strings.last().map_or(0, |l| l.chars().count()))
                .flat_map(|s| alphabet.iter().map(move |&c| format!("{s}{c}")))
                .collect();
            strings.extend(longer);
        }
        for s in &strings {
            let collapsed = s.split(ws).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
            let replaced: String = s.chars().map(|c| if ws(c) { ' ' } else { c }).collect();
            assert_eq!(WhiteSpace::Collapse.apply(s), collapsed, "{s:?}");
            assert_eq!(WhiteSpace::Replace.apply(s), replaced, "{s:?}");
            // Borrowed exactly when nothing changes.
            assert_eq!(matches!(WhiteSpace::Collapse.apply(s), Cow::Borrowed(_)), collapsed == *s, "{s:?}");
        }
    }

    #[test]
    fn decimals_compare_and_count_digits_exactly() {
        let d = |s| Decimal::parse(s).unwrap();
        assert_eq!(d("0010.500").total_digits(), 3);
        assert_eq!(d("0010.500").fraction_digits(), 1);
        assert_eq!(d("-0.00"), d("0"));
        assert!(d("99999999999999.99") > d("99999999999999.98"));
        assert!(d("-2") < d("-1.5"));
        assert!(d("+.5") == d("0.5"));
        assert!(Decimal::parse(".").is_none() && Decimal::parse("1e3").is_none() && Decimal::parse("١").is_none());
        assert!(Decimal::parse_integer("1.0").is_none());
        assert_eq!(d("12.345").to_hundredths(), Some(1235));
        assert_eq!(d("-0.004").to_hundredths(), Some(0));
    }

    #[test]
    fn dates_follow_xsd_lexical_rules() {
        assert!(parse_date("2024-02-29").is_some());
        assert!(parse_date("2023-02-29").is_none());
        assert!(parse_date("2024-02-29Z").is_some() && parse_date("2024-02-29+14:00").is_some());
        assert!(parse_date("2024-02-29+14:30").is_none());
        assert!(parse_date("0000-01-01").is_none() && parse_date("02024-01-01").is_none());
        assert!(parse_date("2024-1-01").is_none());
        assert!(parse_date_time("2026-02-01T00:00:00Z").is_some());
        assert!(parse_date_time("2026-02-01T24:00:00").is_some());
        assert!(parse_date_time("2026-02-01T24:00:01").is_none());
        assert!(parse_date_time("2026-02-01T10:00:00.").is_none());
        assert!(parse_date_time("2026-02-01").is_none());
        assert!(parse_g_year("2026").is_some() && parse_g_year("26").is_none());
    }

    #[test]
    fn date_times_order_across_timezones_as_xsd_says() {
        let t = |s| parse_date_time(s).unwrap();
        let max = t("2050-01-01T23:59:59Z");
        assert_eq!(t("2050-01-01T23:00:00-01:00").compare(&max), Some(Ordering::Greater));
        assert_eq!(t("2050-01-02T00:59:59+01:00").compare(&max), Some(Ordering::Equal));
        assert_eq!(t("2026-01-31T24:00:00Z").compare(&t("2026-02-01T00:00:00Z")), Some(Ordering::Equal));
        // Without a timezone: only ordered when more than 14 hours away.
        assert_eq!(t("2050-01-01T23:59:59").compare(&max), None);
        assert_eq!(t("2050-01-01T09:59:58").compare(&max), Some(Ordering::Less));
        assert_eq!(t("2050-01-02T14:00:00").compare(&max), Some(Ordering::Greater));
        assert_eq!(
            t("2026-01-01T00:00:00.5Z").compare(&t("2026-01-01T00:00:00.45Z")),
            Some(Ordering::Greater)
        );
        assert!(parse_date("2024-03-01").unwrap().compare(&parse_date("2024-02-29").unwrap()) == Some(Ordering::Greater));
    }

    #[test]
    fn integer_types_have_their_ranges() {
        assert!(Builtin::Byte.parse("127").is_ok() && Builtin::Byte.parse("128").is_err());
        assert!(Builtin::NonNegativeInteger.parse("-1").is_err() && Builtin::NonNegativeInteger.parse("-0").is_ok());
        assert!(Builtin::Int.parse("2147483648").is_err());
    }
}
