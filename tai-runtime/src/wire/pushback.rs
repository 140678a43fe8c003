//! Server pushback (`grpc-retry-pushback-ms`), per gRFC A6.
//!
//! A6: "The value is to be an ASCII encoded signed 32-bit integer with no
//! unnecessary leading zeros that represents how many milliseconds to wait before
//! sending a retry. If the value for pushback is negative or unparseable, then it
//! will be seen as the server asking the client not to retry at all."
//!
//! So a value is valid only if it is an optional `-` followed by ASCII digits and
//! fits an `i32`. Everything else is "unparseable", which means do not retry: a
//! leading `+`, whitespace anywhere, an empty value, a value beyond `i32`.
//! A valid negative value also means stop. Leading zeros (`"012"`) and `"-0"` are
//! still read as numbers. A sender should not use them, but every gRPC
//! implementation reads them, and they are not ambiguous.
//!
//! How this compares with grpc-go: `stream.go` reads the value with
//! `strconv.Atoi` and stops on an error or a negative result, and tai does the same.
//! `Atoi` is looser in two ways that tai deliberately does not copy. It accepts a
//! leading `+`, and it parses a platform `int` (64 bits), so grpc-go would wait
//! 25 days for `"2147483648000"`. Both go beyond what A6 allows, so tai stops instead.
//! grpc-java (`Integer.valueOf`) also stops on values beyond `i32`. Two or more
//! values also mean stop, as in grpc-go.

use std::time::Duration;

use tonic::metadata::MetadataMap;

use super::GRPC_RETRY_PUSHBACK_MS as HEADER;

/// What the server said about retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// Nothing: the client's own backoff applies.
    None,
    /// Do not retry: a negative, unparseable or repeated value.
    Stop,
    /// Retry after exactly this long; the backoff sequence starts over.
    After(Duration),
}

impl Pushback {
    pub(crate) fn from_metadata(metadata: &MetadataMap) -> Pushback {
        let mut values = metadata.get_all(HEADER).iter();
        let Some(first) = values.next() else {
            return Pushback::None;
        };
        if values.next().is_some() {
            return Pushback::Stop;
        }
        match parse_millis(first.as_encoded_bytes()) {
            Some(ms) if ms >= 0 => {
                Pushback::After(Duration::from_millis(u64::from(ms.unsigned_abs())))
            }
            _ => Pushback::Stop,
        }
    }
}

/// A6's signed 32-bit decimal: an optional `-`, then one or more ASCII digits, in
/// `i32` range. `None` for anything else.
fn parse_millis(value: &[u8]) -> Option<i32> {
    let digits = value.strip_prefix(b"-").unwrap_or(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Only `-` and digits are left, so std's parser (which would also take a `+`)
    // sees exactly A6's grammar; it rejects what overflows `i32`.
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&'static str]) -> Pushback {
        let mut md = MetadataMap::new();
        for v in values {
            md.append(HEADER, v.parse().unwrap());
        }
        Pushback::from_metadata(&md)
    }

    #[test]
    fn a6_cases() {
        assert_eq!(parse(&[]), Pushback::None);
        assert_eq!(parse(&["1000"]), Pushback::After(Duration::from_secs(1)));
        assert_eq!(parse(&["0"]), Pushback::After(Duration::ZERO));
        assert_eq!(parse(&["-1"]), Pushback::Stop);
        assert_eq!(parse(&["xxx"]), Pushback::Stop);
        assert_eq!(parse(&["100", "10"]), Pushback::Stop);
    }

    /// A6: "an ASCII encoded signed 32-bit integer"; anything else is unparseable,
    /// which asks the client not to retry.
    #[test]
    fn values_outside_i32_mean_stop() {
        assert_eq!(
            parse(&["2147483647"]),
            Pushback::After(Duration::from_millis(2_147_483_647))
        );
        assert_eq!(parse(&["2147483648"]), Pushback::Stop);
        assert_eq!(parse(&["9223372036854775807"]), Pushback::Stop);
        assert_eq!(parse(&["99999999999999999999"]), Pushback::Stop);
        assert_eq!(parse(&["-2147483648"]), Pushback::Stop);
        assert_eq!(parse(&["-2147483649"]), Pushback::Stop);
    }

    /// Only an optional `-` and ASCII digits: no sign `+`, no whitespace, nothing else.
    #[test]
    fn only_a_plain_decimal_is_valid() {
        for bad in [
            "+12", " 12", "12 ", "\t12", "1 2", "", "-", "+", "12ms", "1.5", "0x10", "1e3",
        ] {
            assert_eq!(parse(&[bad]), Pushback::Stop, "{bad:?}");
        }
        assert_eq!(parse(&["012"]), Pushback::After(Duration::from_millis(12)));
        assert_eq!(parse(&["-0"]), Pushback::After(Duration::ZERO));
    }
}
