//! Connectivity states, as gRPC's connectivity API names them.

use std::fmt;

/// The state of a connection, an endpoint or a whole channel.
///
/// A channel is `Ready` if any endpoint is, else `Connecting` if any is trying, else
/// `TransientFailure` if any failed, else `Idle`; `Shutdown` once closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectivityState {
    /// No connection and none wanted yet (before the first call, or after the idle
    /// timeout).
    Idle,
    /// A connection is being set up.
    Connecting,
    /// At least one connection can carry calls.
    Ready,
    /// Connecting failed; the next attempt waits for its backoff.
    TransientFailure,
    /// Closed for good.
    Shutdown,
}

impl ConnectivityState {
    pub(crate) const fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) const fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Connecting,
            2 => Self::Ready,
            3 => Self::TransientFailure,
            _ => Self::Shutdown,
        }
    }

    /// Combines the states of parts into the state of the whole.
    pub(crate) fn aggregate(states: impl IntoIterator<Item = ConnectivityState>) -> Self {
        let mut seen = [false; 5];
        let mut any = false;
        for s in states {
            seen[s as usize] = true;
            any = true;
        }
        if !any {
            return Self::Idle;
        }
        [
            Self::Ready,
            Self::Connecting,
            Self::TransientFailure,
            Self::Idle,
            Self::Shutdown,
        ]
        .into_iter()
        .find(|s| seen[*s as usize])
        .unwrap_or(Self::Shutdown)
    }
}

impl fmt::Display for ConnectivityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Ready => "ready",
            Self::TransientFailure => "transient-failure",
            Self::Shutdown => "shutdown",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectivityState::*;
    use super::*;

    #[test]
    fn aggregation_prefers_ready_then_connecting() {
        assert_eq!(
            ConnectivityState::aggregate([TransientFailure, Ready, Idle]),
            Ready
        );
        assert_eq!(
            ConnectivityState::aggregate([TransientFailure, Connecting]),
            Connecting
        );
        assert_eq!(
            ConnectivityState::aggregate([TransientFailure, Idle]),
            TransientFailure
        );
        assert_eq!(ConnectivityState::aggregate([Idle, Shutdown]), Idle);
        assert_eq!(ConnectivityState::aggregate([Shutdown]), Shutdown);
        assert_eq!(ConnectivityState::aggregate([]), Idle);
        for s in [Idle, Connecting, Ready, TransientFailure, Shutdown] {
            assert_eq!(ConnectivityState::from_u8(s.to_u8()), s);
        }
    }
}
