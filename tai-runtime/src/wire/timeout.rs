//! The `grpc-timeout` header, both ways: the client writes the time its call has
//! left, the server reads the deadline it must keep. One codec, so the two sides
//! cannot disagree on units or digits.

use std::time::Duration;

/// The `grpc-timeout` header value for `left`: the most precise of microseconds,
/// milliseconds, seconds, minutes and hours that fits the 8 digits gRPC allows,
/// rounded down (so the server's deadline is never later than ours).
///
/// tonic's `Request::set_timeout` writes the same header through `format!` and a
/// re-parse of its own output: two allocations and some 1,500 instructions. This
/// writes the digits into a stack buffer. `None` cannot happen (digits and a unit
/// letter are always a valid header value); it is not unwrapped only so that no
/// panic sits on the call path.
pub(crate) fn encode(left: Duration) -> Option<http::HeaderValue> {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(left.as_secs());
    let (value, unit) = [
        (left.as_micros(), b'u'),
        (left.as_millis(), b'm'),
        (secs, b'S'),
        (secs / 60, b'M'),
        (secs / 3600, b'H'),
    ]
    .into_iter()
    .find(|(v, _)| *v <= MAX)
    .unwrap_or((MAX, b'H'));
    let mut buf = [0u8; 9];
    buf[8] = unit;
    let mut at = 8;
    let mut v = value as u32; // at most 99_999_999
    loop {
        at -= 1;
        buf[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&buf[at..]).ok()
}

/// The timeout a request's `grpc-timeout` header carries, if it carries a valid
/// one.
pub(crate) fn of(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(super::GRPC_TIMEOUT)
        .and_then(|v| decode(v.as_bytes()))
}

/// Parses a `grpc-timeout` header value (`"100m"`, `"2S"`, ...): one to eight
/// ASCII digits and a unit, as the gRPC HTTP/2 protocol spec writes it; anything
/// else (a sign, a space, a ninth digit) is no timeout.
///
/// ```
/// use std::time::Duration;
/// use tai_runtime::server::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
/// assert_eq!(parse_grpc_timeout(b"+1S"), None);
/// ```
pub fn decode(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    // Eight decimal digits fit a u64 many times over; folded by hand because
    // `str::parse` (UTF-8 check, sign handling, overflow checks) costs several
    // times as much, and every call a server takes with a deadline comes here.
    let n = digits.iter().try_fold(0u64, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })?;
    Some(match unit {
        b'H' => Duration::from_secs(n.checked_mul(3600)?),
        b'M' => Duration::from_secs(n.checked_mul(60)?),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_timeout(d: Duration) -> Option<http::HeaderValue> {
        encode(d)
    }

    #[test]
    fn grpc_timeout_picks_the_finest_unit_that_fits() {
        let t = |d: Duration| grpc_timeout(d).unwrap().to_str().unwrap().to_owned();
        assert_eq!(t(Duration::from_nanos(1_500)), "1u");
        assert_eq!(t(Duration::ZERO), "0u");
        assert_eq!(t(Duration::from_millis(500)), "500000u");
        assert_eq!(t(Duration::from_micros(4_999_987)), "4999987u");
        assert_eq!(t(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(t(Duration::from_micros(100_000_001)), "100000m");
        assert_eq!(t(Duration::from_secs(3600)), "3600000m");
        assert_eq!(t(Duration::from_secs(200_000)), "200000S");
        assert_eq!(t(Duration::from_secs(6_000_000_000)), "1666666H");
        assert_eq!(t(Duration::MAX), "99999999H");
    }

    #[test]
    fn decodes_what_the_spec_allows() {
        assert_eq!(decode(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(decode(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(decode(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(decode(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(decode(b"123456789n"), None, "at most 8 digits");
        assert_eq!(decode(b"m"), None);
        assert_eq!(decode(b"10x"), None);
        assert_eq!(decode(b"-1S"), None);
        assert_eq!(decode(b"+1S"), None, "digits only");
        assert_eq!(decode(b" 1S"), None);
    }
}
