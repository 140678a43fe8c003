//! How a refused call is answered: RESOURCE_EXHAUSTED with a message naming the
//! client, the quota that refused it and the wait, and the wait again in the
//! `grpc-retry-pushback-ms` trailer (gRFC A6), which tai's clients honor.
//!
//! Local and Redis quotas refuse alike, so a [`Refusal`] is plain data (which
//! quota, how long to wait) turned into a status in one place.

use std::fmt;
use std::time::Duration;

use governor::Quota;
use tonic::Status;
use tonic::metadata::AsciiMetadataValue;

use super::key::ClientKey;
use super::method::Methods;
use crate::wire::GRPC_RETRY_PUSHBACK_MS as PUSHBACK;

/// Which quota refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// The per-client default; `shared` when the client has no bucket of its
    /// own (the table of clients is full).
    Client { shared: bool },
    /// Method `index`'s per-client quota.
    Method { index: usize, shared: bool },
    /// The quota of all clients together.
    Global,
}

/// A refused call: the quota that refused it and when to come back.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refusal {
    pub(super) scope: Scope,
    pub(super) quota: Quota,
    pub(super) wait: Duration,
}

impl Refusal {
    /// The status the client gets. `max_clients` and `methods` are the layer's, to
    /// name what refused.
    #[cold]
    #[inline(never)]
    pub(super) fn into_status(
        self,
        key: &ClientKey,
        max_clients: usize,
        methods: &Methods,
    ) -> Status {
        // Rounded up, and at least 1: a client that comes back on time is admitted.
        let retry_ms = u64::try_from(self.wait.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let quota = QuotaText(self.quota);
        let on = |scope| match scope {
            Scope::Method { index, .. } => format!(" on {}", methods.path(index)),
            _ => String::new(),
        };
        let message = match self.scope {
            Scope::Client { shared: false } | Scope::Method { shared: false, .. } => format!(
                "rate limit exceeded for {key}{on}: the limit is {quota} per client{method}; \
                 retry in {retry_ms} ms",
                on = on(self.scope),
                method = if matches!(self.scope, Scope::Method { .. }) {
                    " for this method"
                } else {
                    ""
                },
            ),
            Scope::Client { shared: true } | Scope::Method { shared: true, .. } => format!(
                "rate limit exceeded for {key}{on}: this server tracks at most {max_clients} \
                 clients and is full, so {key} shares one limit of {quota} with every other \
                 client it does not track; retry in {retry_ms} ms",
                on = on(self.scope),
            ),
            Scope::Global => format!(
                "the server is over its rate limit for all clients together ({quota}); \
                 retry in {retry_ms} ms"
            ),
        };
        tracing::debug!(client = %key, scope = ?self.scope, retry_ms, "rate limit: call refused");
        let mut status = Status::resource_exhausted(message);
        status
            .metadata_mut()
            .insert(PUSHBACK, AsciiMetadataValue::from(retry_ms));
        status
    }
}

/// A quota as a person reads it: `10 calls/s in bursts of up to 20`.
struct QuotaText(Quota);

impl fmt::Display for QuotaText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_second = 1e9 / (self.0.replenish_interval().as_nanos().max(1) as f64);
        let (rate, unit) = if per_second >= 1.0 {
            (per_second, "s")
        } else if per_second * 60.0 >= 1.0 {
            (per_second * 60.0, "min")
        } else {
            (per_second * 3600.0, "h")
        };
        let burst = self.0.burst_size();
        if (rate - rate.round()).abs() < 0.005 {
            write!(f, "{rate:.0}")?;
        } else {
            write!(f, "{rate:.2}")?;
        }
        let calls = |n: bool| if n { "call" } else { "calls" };
        write!(
            f,
            " {}/{unit} in bursts of up to {burst} {}",
            calls((rate - 1.0).abs() < 0.005),
            calls(burst.get() == 1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::time::Duration;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn quota_text() {
        let text = |q: Quota| QuotaText(q).to_string();
        assert_eq!(
            text(Quota::per_second(nz(10)).allow_burst(nz(20))),
            "10 calls/s in bursts of up to 20 calls"
        );
        assert_eq!(
            text(Quota::per_second(nz(1))),
            "1 call/s in bursts of up to 1 call"
        );
        assert_eq!(
            text(Quota::per_minute(nz(30))),
            "30 calls/min in bursts of up to 30 calls"
        );
        assert_eq!(
            text(Quota::per_hour(nz(2))),
            "2 calls/h in bursts of up to 2 calls"
        );
        assert_eq!(
            text(Quota::with_period(Duration::from_millis(1500)).unwrap()),
            "40 calls/min in bursts of up to 1 call"
        );
    }
}
