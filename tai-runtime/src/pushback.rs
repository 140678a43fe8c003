//! Server pushback (`grpc-retry-pushback-ms`), per gRFC A6.

use std::time::Duration;

use tonic::metadata::MetadataMap;

const HEADER: &str = "grpc-retry-pushback-ms";

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
        match first
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            Some(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
            _ => Pushback::Stop,
        }
    }
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
}
