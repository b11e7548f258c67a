//! Go `time.ParseDuration` syntax, and `Duration.String()` formatting for output.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A signed duration in nanoseconds, read from and written as a Go duration string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration {
    nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    pub fn from_nanos(nanos: i64) -> Self {
        Self { nanos }
    }

    /// Saturates at `i64::MAX` nanoseconds (about 292 years).
    pub fn from_std(d: Duration) -> Self {
        Self {
            nanos: i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        }
    }

    pub fn as_nanos(self) -> i64 {
        self.nanos
    }

    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    pub fn is_zero(self) -> bool {
        self.nanos == 0
    }

    /// The duration as a std `Duration`; `None` when negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }

    /// Parses Go duration syntax: an optional sign, then one or more `<decimal>[.<decimal>]<unit>` with units
    /// `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`. The bare `"0"` is allowed.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError {
            input: input.to_owned(),
            reason,
        };
        let (neg, mut rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        if rest == "0" {
            return Ok(Self::ZERO);
        }
        if rest.is_empty() {
            return Err(err("empty"));
        }
        // Accumulate in u128 nanoseconds so that overflow is detected, not wrapped.
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(after_dot) = rest.strip_prefix('.') {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                frac_part = &after_dot[..frac_len];
                rest = &after_dot[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return Err(err("expected a number"));
            }
            let unit_len = rest
                .bytes()
                .take_while(|b| !b.is_ascii_digit() && *b != b'.')
                .count();
            let unit: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            let whole: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().map_err(|_| err("number too large"))?
            };
            let mut value = whole.checked_mul(unit).ok_or_else(|| err("overflow"))?;
            // Fraction digits beyond nanosecond precision are dropped, as Go does.
            let mut scale = unit;
            for digit in frac_part.bytes().take(30) {
                scale /= 10;
                value += u128::from(digit - b'0') * scale;
            }
            total = total.checked_add(value).ok_or_else(|| err("overflow"))?;
            if total > i64::MAX as u128 + u128::from(neg) {
                return Err(err("overflow"));
            }
        }
        let nanos = if neg {
            // total <= 2^63, so the negation fits.
            i64::try_from(-(total as i128)).map_err(|_| err("overflow"))?
        } else {
            i64::try_from(total).map_err(|_| err("overflow"))?
        };
        Ok(Self { nanos })
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()`: `"1h2m3.5s"`, `"500ms"`, `"1.5µs"`, `"0s"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0s");
        }
        if self.nanos < 0 {
            f.write_str("-")?;
        }
        let n = self.nanos.unsigned_abs();
        if n < 1_000_000_000 {
            let (unit, scale) = match n {
                0..1_000 => ("ns", 1u64),
                1_000..1_000_000 => ("µs", 1_000),
                _ => ("ms", 1_000_000),
            };
            write_fraction(f, n, scale)?;
            return f.write_str(unit);
        }
        let hours = n / 3_600_000_000_000;
        let minutes = (n / 60_000_000_000) % 60;
        let sub_minute = n % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_fraction(f, sub_minute, 1_000_000_000)?;
        f.write_str("s")
    }
}

/// Writes `n / scale` with the fractional digits that are non-zero, Go style.
fn write_fraction(f: &mut fmt::Formatter<'_>, n: u64, scale: u64) -> fmt::Result {
    let whole = n / scale;
    let frac = n % scale;
    write!(f, "{whole}")?;
    if frac == 0 {
        return Ok(());
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    write!(f, ".{}", digits.trim_end_matches('0'))
}

impl std::str::FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        GoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}
