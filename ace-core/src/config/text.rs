//! Durations as readable text for serde (`"2s"`, `"50ms"`, `"1.5s"`, `"1h"`), and the optional
//! fields' `"off"` spelling, for `#[serde(with = "…")]` on your own config types too:
//!
//! ```
//! #[derive(serde::Deserialize)]
//! struct MyOptions {
//!     #[serde(with = "ace_core::serde_text::duration")]
//!     timeout: core::time::Duration,
//! }
//! let o: MyOptions = serde_json::from_str(r#"{ "timeout": "250ms" }"#).unwrap();
//! assert_eq!(o.timeout, core::time::Duration::from_millis(250));
//! ```
//!
//! `no_std`: nothing here allocates.

use core::fmt;
use core::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// `duration` as the shortest exact text: `0s`, `2s`, `1500ms`, `90s`, `2m`, `1h`, `250us`, `7ns`.
pub(crate) struct DurationText(pub(crate) Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, nanos) = (self.0.as_secs(), self.0.subsec_nanos());
        if nanos == 0 {
            match secs {
                0 => f.write_str("0s"),
                s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
                s if s % 60 == 0 => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            }
        } else if nanos % 1_000_000 == 0 {
            write!(f, "{}ms", self.0.as_millis())
        } else if nanos % 1_000 == 0 {
            write!(f, "{}us", self.0.as_micros())
        } else {
            write!(f, "{}ns", self.0.as_nanos())
        }
    }
}

/// Why a text is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// No number at the start.
    NoNumber,
    /// No unit, or one not among `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, `d`.
    Unit,
    /// More than nanosecond precision, or more than `u64::MAX` seconds.
    Range,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoNumber => "a duration is a number and a unit, like \"2s\" or \"50ms\"",
            Self::Unit => "a duration needs a unit: ns, us, ms, s, m, h or d (\"2s\", \"50ms\")",
            Self::Range => "the duration is out of range (at most nanosecond precision)",
        })
    }
}

/// Parses `"2s"`, `"50ms"`, `"1.5s"`, `"250 us"`, `"1h"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, ParseError> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let unit_ns: u128 = match unit.trim_start() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        _ if number.is_empty() => return Err(ParseError::NoNumber),
        _ => return Err(ParseError::Unit),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(ParseError::NoNumber);
    }
    let digits = |s: &str| -> Result<u128, ParseError> {
        s.bytes().try_fold(0u128, |acc, b| {
            if !b.is_ascii_digit() {
                return Err(ParseError::NoNumber);
            }
            acc.checked_mul(10)
                .and_then(|a| a.checked_add(u128::from(b - b'0')))
                .ok_or(ParseError::Range)
        })
    };
    let mut nanos = digits(whole)?
        .checked_mul(unit_ns)
        .ok_or(ParseError::Range)?;
    if !fraction.is_empty() {
        let scale = 10u128
            .checked_pow(u32::try_from(fraction.len()).map_err(|_| ParseError::Range)?)
            .ok_or(ParseError::Range)?;
        let part = digits(fraction)?
            .checked_mul(unit_ns)
            .ok_or(ParseError::Range)?;
        if part % scale != 0 {
            return Err(ParseError::Range);
        }
        nanos = nanos.checked_add(part / scale).ok_or(ParseError::Range)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| ParseError::Range)?;
    // `nanos % 1e9` is below 1e9: it fits.
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| ParseError::Range)?;
    Ok(Duration::new(secs, sub))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like \"2s\" or \"50ms\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(|e| E::custom(format_args!("{e}, not {v:?}")))
    }
}

/// `#[serde(with = "ace_core::serde_text::duration")]`: a [`Duration`] as `"2s"`, `"50ms"`, …
pub mod duration {
    use super::{Deserializer, Duration, DurationText, DurationVisitor, Serializer};

    /// Writes the value as text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&DurationText(*d))
    }

    /// Reads the value from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }
}

/// A value read by `inner`, or `None` for `"off"`, `false` or a null.
struct OffOr<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for OffOr<V> {
    type Value = Option<V::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(", or \"off\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v == "off" {
            Ok(None)
        } else {
            self.0.visit_str(v).map(Some)
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.0.visit_f64(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.visit_i64(v).map(Some)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.0.visit_u64(v).map(Some)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        if v {
            Err(E::invalid_value(de::Unexpected::Bool(v), &self))
        } else {
            Ok(None)
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Reads a number (integers included).
struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "a config number, far below 2^53"
    )]
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "a config number, far below 2^53"
    )]
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
}

/// `#[serde(with = "ace_core::serde_text::optional_duration")]`: a duration, or `"off"` (or
/// `false`) for `None`.
pub mod optional_duration {
    use super::{Deserializer, Duration, DurationText, DurationVisitor, OffOr, Serializer};

    /// Writes the value as text (`"off"` for `None`).
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&DurationText(*d)),
            None => s.serialize_str("off"),
        }
    }

    /// Reads the value from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(OffOr(DurationVisitor))
    }
}

/// `#[serde(with = "ace_core::serde_text::optional_number")]`: a number, or `"off"` (or `false`)
/// for `None`.
pub mod optional_number {
    use super::{Deserializer, NumberVisitor, OffOr, Serializer};

    /// Writes the number (`"off"` for `None`).
    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_f64(*v),
            None => s.serialize_str("off"),
        }
    }

    /// Reads the value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        d.deserialize_any(OffOr(NumberVisitor))
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, DurationText, ParseError};
    use alloc::string::ToString;
    use core::time::Duration;

    #[test]
    fn parses_units_decimals_and_spaces() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("50ms"), Ok(ms(50)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration(" 250 us "), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
    }

    #[test]
    fn refuses_missing_units_numbers_and_excess_precision() {
        assert_eq!(parse_duration("2"), Err(ParseError::Unit));
        assert_eq!(parse_duration("2 parsecs"), Err(ParseError::Unit));
        assert_eq!(parse_duration("ms"), Err(ParseError::NoNumber));
        assert_eq!(parse_duration(""), Err(ParseError::NoNumber));
        assert_eq!(parse_duration("1.2.3s"), Err(ParseError::NoNumber));
        assert_eq!(parse_duration("0.5ns"), Err(ParseError::Range));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999d"),
            Err(ParseError::Range)
        );
    }

    #[test]
    fn writes_the_shortest_exact_text_and_reads_it_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1_500), "1500ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7_200), "2h"),
            (Duration::from_micros(250), "250us"),
            (Duration::new(1, 7), "1000000007ns"),
        ] {
            assert_eq!(DurationText(d).to_string(), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }
}
