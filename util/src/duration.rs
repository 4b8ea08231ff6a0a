//! Durations as people write them in settings: seconds as a number (`30`, `2.5`) or
//! text with a unit (`"30s"`, `"500ms"`, `"2m"`). The serde functions go with
//! `#[serde(with = "jielong_util::duration")]` (and [`option`] for an
//! `Option<Duration>`); [`Schema`] is their JSON Schema
//! (`#[schemars(with = "jielong_util::duration::Schema")]`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes as `"30s"` (whole seconds) or `"1500ms"`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    if d.subsec_nanos() == 0 {
        s.serialize_str(&format!("{}s", d.as_secs()))
    } else {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

/// Deserializes a number of seconds or a string with a unit.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration: seconds as a number, or a string like \"30s\", \"500ms\", \"2m\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(v).map_err(|_| E::custom("invalid duration"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).ok_or_else(|| E::custom(format!("invalid duration {v:?}")))
    }
}

/// Parses `"30"`, `"30s"`, `"1.5s"`, `"500ms"`, `"2m"`.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => number,
        "ms" => number / 1000.0,
        "m" | "min" | "mins" => number * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// `serde` for `Option<Duration>` in the same notation.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as [`super::serialize`] does, `None` as null.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Deserializes null or a duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}

/// The JSON Schema of a duration: seconds as a number, or text with a unit.
pub struct Schema;

impl schemars::JsonSchema for Schema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Seconds as a number, or text with a unit: \"30s\", \"500ms\", \"2m\".",
            "type": ["number", "string"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("soon"), None);
    }

    #[test]
    fn options_read_null_and_durations() {
        #[derive(serde::Deserialize)]
        struct Limits {
            #[serde(default, with = "option")]
            limit: Option<Duration>,
        }
        let read = |text: &str| serde_json::from_str::<Limits>(text).map(|l| l.limit);
        assert_eq!(
            read(r#"{"limit": "2m"}"#).ok(),
            Some(Some(Duration::from_secs(120)))
        );
        assert_eq!(
            read(r#"{"limit": 1.5}"#).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        assert_eq!(read(r#"{"limit": null}"#).ok(), Some(None));
        assert_eq!(read("{}").ok(), Some(None));
        assert!(read(r#"{"limit": "soon"}"#).is_err());
        assert!(read(r#"{"limit": -1}"#).is_err());
    }
}
