//! DSL durations: ISO 8601 (`PT1H30M`, `P2D`) or inline (`{ minutes: 5, seconds: 30 }`).

use std::time::Duration;

use serde_json::Value;

/// Reads a duration; `None` when `value` is neither form. Days are 24 hours; years and months,
/// which have no fixed length, are refused.
pub fn parse(value: &Value) -> Option<Duration> {
    match value {
        Value::String(text) => parse_iso8601(text),
        Value::Object(fields) => {
            let mut millis: u64 = 0;
            for (unit, amount) in fields {
                let amount = amount.as_u64()?;
                let factor: u64 = match unit.as_str() {
                    "days" => 86_400_000,
                    "hours" => 3_600_000,
                    "minutes" => 60_000,
                    "seconds" => 1_000,
                    "milliseconds" => 1,
                    _ => return None,
                };
                millis = millis.checked_add(amount.checked_mul(factor)?)?;
            }
            Some(Duration::from_millis(millis))
        }
        _ => None,
    }
}

/// Reads an ISO 8601 duration such as `PT1H30M`, `P2DT4H` or `PT0.5S`.
pub fn parse_iso8601(text: &str) -> Option<Duration> {
    let text = text.trim();
    // jiff also reads its friendly format (`1h 30m`); the DSL wants ISO 8601 only.
    if !text.starts_with(['P', 'p']) {
        return None;
    }
    let span: jiff::Span = text.parse().ok()?;
    if span.get_years() != 0 || span.get_months() != 0 || span.is_negative() {
        return None;
    }
    let days = i64::from(span.get_weeks()) * 7 + i64::from(span.get_days());
    let rest = jiff::SignedDuration::from_hours(span.get_hours() as i64)
        .checked_add(jiff::SignedDuration::from_mins(span.get_minutes()))?
        .checked_add(jiff::SignedDuration::from_secs(span.get_seconds()))?
        .checked_add(jiff::SignedDuration::from_millis(span.get_milliseconds()))?
        .checked_add(jiff::SignedDuration::from_micros(span.get_microseconds()))?
        .checked_add(jiff::SignedDuration::from_nanos(span.get_nanoseconds()))?
        .checked_add(jiff::SignedDuration::from_hours(days.checked_mul(24)?))?;
    Duration::try_from(rest).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn both_forms_read() {
        assert_eq!(parse(&json!("PT1H30M")), Some(Duration::from_secs(5400)));
        assert_eq!(parse(&json!("P2DT1S")), Some(Duration::from_secs(2 * 86_400 + 1)));
        assert_eq!(parse(&json!("PT0.5S")), Some(Duration::from_millis(500)));
        assert_eq!(parse(&json!({"minutes": 5, "seconds": 30})), Some(Duration::from_secs(330)));
        assert_eq!(parse(&json!({"milliseconds": 250})), Some(Duration::from_millis(250)));
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [json!("1h"), json!("P1M"), json!("P1Y"), json!({"fortnights": 1}), json!(5), json!({"seconds": -1})]
        {
            assert_eq!(parse(&bad), None, "{bad}");
        }
    }
}
