//! Errors of building a client (never of a call: calls fail with a `Status`).

use std::fmt;

use crate::BoxError;

/// A client could not connect to its address.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectError {
    address: String,
    source: BoxError,
}

impl ConnectError {
    pub(crate) fn new(address: &str, source: impl Into<BoxError>) -> Self {
        Self {
            address: address.to_owned(),
            source: source.into(),
        }
    }

    /// The address that was being connected to.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot connect to {}: {}", self.address, self.source)?;
        let mut source = self.source.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
