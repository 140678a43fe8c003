//! Durations as written in policies: `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`.

use std::time::Duration;

const UNITS: [(&str, u128); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration: a non-negative decimal number followed by one of `ns`, `us`,
/// `ms`, `s`, `m`, `h` (the protobuf JSON form `"1.5s"` is one case of this).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tai_model::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(tai_model::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(tai_model::parse_duration("10").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| {
            format!("`{text}` has no unit: write it like \"250ms\", \"2s\" or \"1.5m\"")
        })?;
    let (number, unit) = text.split_at(split);
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, scale)| *scale)
        .ok_or_else(|| {
            format!("`{text}` has an unknown unit `{unit}`: use one of ns, us, ms, s, m, h")
        })?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(format!("`{text}` has no number before its unit"));
    }
    let parse = |digits: &str| -> Result<u128, String> {
        if digits.is_empty() {
            Ok(0)
        } else {
            digits
                .parse::<u128>()
                .map_err(|_| format!("`{text}` is not a number followed by a unit"))
        }
    };
    let mut nanos = parse(whole)?
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if !fraction.is_empty() {
        // Exact decimal arithmetic: "1.5s" must be 1_500_000_000 ns, not a float's guess.
        let digits = fraction.len().min(30) as u32;
        let frac = parse(&fraction[..digits as usize])?;
        nanos += frac.saturating_mul(scale) / 10u128.pow(digits);
    }
    let secs =
        u64::try_from(nanos / 1_000_000_000).map_err(|_| format!("`{text}` is too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration in the largest unit that keeps it whole, so that
/// `parse_duration(&format_duration(d)) == Ok(d)`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tai_model::format_duration(Duration::from_millis(1500)), "1500ms");
/// assert_eq!(tai_model::format_duration(Duration::from_secs(120)), "2m");
/// ```
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (unit, scale) = UNITS
        .iter()
        .rev()
        .find(|(_, scale)| nanos.is_multiple_of(*scale))
        .copied()
        .unwrap_or(("ns", 1));
    format!("{}{unit}", nanos / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("7ms"), Ok(Duration::from_millis(7)));
        assert_eq!(parse_duration("7s"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("7m"), Ok(Duration::from_secs(420)));
        assert_eq!(parse_duration("7h"), Ok(Duration::from_secs(7 * 3600)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0.001s"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "s",
            "10",
            "1.2.3s",
            "5 parsecs",
            "-1s",
            "1x",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [1, 999, 1_000, 1_500_000, 2_000_000_000, 120_000_000_000] {
            let d = Duration::from_nanos(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
