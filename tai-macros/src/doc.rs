//! Doc prose of the generated client: one line per method saying what its resolved
//! policy does, so that a reader of the docs (or of `cargo expand`) need not decode
//! the data.

use std::time::Duration;

use tai_model::{CodeSet, MethodKind, ResolvedPolicy, format_duration};

/// How the docs name a kind of method.
pub(crate) fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "unary",
        MethodKind::ServerStreaming => "server-streaming",
        MethodKind::ClientStreaming => "client-streaming",
        MethodKind::Bidi => "bidi-streaming",
    }
}

/// Code names, comma separated.
fn codes(set: CodeSet) -> String {
    let names: Vec<&str> = set.codes().into_iter().map(tai_model::Code::name).collect();
    names.join(", ")
}

/// One line describing a resolved policy, for doc comments.
pub(crate) fn describe(p: &ResolvedPolicy) -> String {
    let d = |d: Duration| format_duration(d);
    let mut parts = Vec::new();
    if p.idempotent {
        parts.push("idempotent".to_owned());
    }
    parts.push(match (p.timeout, p.max_timeout) {
        (Some(t), Some(max)) => format!("timeout {} (at most {})", d(t), d(max)),
        (Some(t), None) => format!("timeout {}", d(t)),
        (None, Some(max)) => format!("no timeout (at most {})", d(max)),
        (None, None) => "no timeout".to_owned(),
    });
    if let Some(r) = &p.retry {
        parts.push(format!(
            "retry up to {} attempts on {} (backoff {} to {}, ×{})",
            r.max_attempts,
            codes(r.codes),
            d(r.initial_backoff),
            d(r.max_backoff),
            r.multiplier
        ));
    }
    if let Some(h) = &p.hedging {
        let non_fatal = if h.non_fatal_codes.is_empty() {
            String::new()
        } else {
            format!(", continuing past {}", codes(h.non_fatal_codes))
        };
        parts.push(format!(
            "hedging {} attempts {} apart{non_fatal}",
            h.max_attempts,
            d(h.delay)
        ));
    }
    if let Some(b) = &p.breaker {
        let rate = b.rate.as_ref().map_or(String::new(), |r| {
            format!(
                " or {}% of at least {} calls in {}",
                r.threshold * 100.0,
                r.min_calls,
                d(r.window)
            )
        });
        parts.push(format!(
            "breaker opens after {} failures in a row{rate} (open {} to {})",
            b.failure_threshold,
            d(b.open_timeout),
            d(b.max_open_timeout)
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tai_model::{PolicySpec, validate};

    #[test]
    fn describes_a_policy_in_one_line() {
        let service = PolicySpec {
            idempotent: Some(true),
            timeout: Some(tai_model::Toggle::On(Duration::from_secs(2))),
            retry: Some(tai_model::Toggle::On(tai_model::RetrySpec::default())),
            breaker: Some(tai_model::Toggle::On(tai_model::BreakerSpec::default())),
            ..PolicySpec::default()
        };
        let policy = validate(&[&service], MethodKind::Unary, None).unwrap();
        assert_eq!(
            describe(&policy),
            "idempotent; timeout 2s; retry up to 3 attempts on UNAVAILABLE (backoff 100ms to 10s, ×2); \
             breaker opens after 5 failures in a row or 50% of at least 20 calls in 10s (open 30s to 5m)"
        );
    }
}
