//! The one error context of an expansion (serde_derive's `Ctxt`).
//!
//! Every step — parsing attributes, reading method shapes, validating policies —
//! records its mistakes here and goes on, so that one compilation reports them all.
//! Errors are kept in two groups because they decide different fallbacks: with a
//! mistake in a method's *shape* no client can be generated (only the trait is
//! emitted), while with a mistake in a *policy* the client is still generated from
//! the policy as written, so that an IDE and the code using it keep working.

/// What an error is about, which decides how much of the expansion can still be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Concern {
    /// An attribute or a policy: the client can still be generated.
    Policy,
    /// The trait or a method's signature: no client can be generated.
    Shape,
}

/// Collects every error of one expansion.
#[derive(Default)]
pub(crate) struct Ctxt {
    policy: Vec<syn::Error>,
    shape: Vec<syn::Error>,
}

impl Ctxt {
    /// Records an error about an attribute or a policy.
    pub(crate) fn error(&mut self, error: syn::Error) {
        self.push(Concern::Policy, error);
    }

    /// Records an error about the trait's or a method's shape.
    pub(crate) fn shape(&mut self, error: syn::Error) {
        self.push(Concern::Shape, error);
    }

    /// Records an error of either concern.
    pub(crate) fn push(&mut self, concern: Concern, error: syn::Error) {
        match concern {
            Concern::Policy => self.policy.push(error),
            Concern::Shape => self.shape.push(error),
        }
    }

    /// Whether a shape error was recorded, so that no client can be generated.
    pub(crate) fn has_shape_errors(&self) -> bool {
        !self.shape.is_empty()
    }

    /// How many shape errors were recorded, to tell whether a step added one.
    pub(crate) fn shape_errors(&self) -> usize {
        self.shape.len()
    }

    /// `Ok` if nothing was recorded, else every error combined into one, policy
    /// errors first (they come from the attributes, read before the signatures).
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.policy
            .into_iter()
            .chain(self.shape)
            .reduce(|mut all, next| {
                all.combine(next);
                all
            })
            .map_or(Ok(()), Err)
    }
}
