//! UTC dates, through the `time` and `httpdate` crates: the store's timestamps
//! (RFC 3339 with milliseconds), HTTP dates (`Retry-After`, rate-limit resets) and the
//! broken-down time a chat template's `strftime_now` formats.

use std::time::{SystemTime, UNIX_EPOCH};

pub use time::OffsetDateTime;

/// `at` in UTC as a broken-down date and time. Times the calendar cannot hold (a
/// broken clock far outside years 1..9999) are clamped to the Unix epoch.
pub fn utc(at: SystemTime) -> OffsetDateTime {
    let nanos = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(0),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(0),
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `at` as RFC 3339 UTC with milliseconds, e.g. `2026-11-29T10:15:02.123Z`. Times
/// before 1970 (a broken clock) are written as `1970-01-01T00:00:00.000Z`.
pub fn rfc3339(at: SystemTime) -> String {
    let t = utc(at.max(UNIX_EPOCH));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The current time as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, and the obsolete RFC 850 and
/// asctime forms) as a time; `None` when it is not one.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_clamps_before_the_epoch() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_411_302_123);
        assert_eq!(rfc3339(at), "2025-11-29T10:15:02.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(parse_http_date("tomorrow"), None);
        assert_eq!(parse_http_date("Sun, 06 Xyz 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn utc_breaks_down() {
        let t = utc(UNIX_EPOCH + Duration::from_secs(784_111_777));
        assert_eq!((t.year(), u8::from(t.month()), t.day()), (1994, 11, 6));
        assert_eq!(t.weekday(), time::Weekday::Sunday);
        assert_eq!(t.ordinal(), 310);
    }
}
