//! Durations as the command line contract writes them: `500ms`, `15s`,
//! `10m`, `1h`. A unit is required, so `15` is an error, not a guess.

use std::time::Duration;

/// Parses `500ms`, `15s`, `10m`, `1h` (also `1.5s`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => {
            return Err(format!(
                "{text:?} has no unit: write e.g. 500ms, 15s, 10m or 1h"
            ));
        }
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m or h)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 15s, 10m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<Duration, ()>) {
        assert_eq!(parse(input).map_err(|_| ()), expected, "{input:?}");
    }

    #[test]
    fn durations() {
        check("500ms", Ok(Duration::from_millis(500)));
        check("15s", Ok(Duration::from_secs(15)));
        check("10m", Ok(Duration::from_secs(600)));
        check("1h", Ok(Duration::from_secs(3600)));
        check("1.5s", Ok(Duration::from_millis(1500)));
        check("15", Err(()));
        check("s", Err(()));
        check("5d", Err(()));
        check("-1s", Err(()));
    }
}
