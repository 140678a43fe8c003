//! Quotas per method: a call to a method given a quota of its own is counted, per
//! client, against that quota instead of the per-client default.
//!
//! Methods are named by their request path (`/package.Service/Method`), which the
//! peer chooses. So a path gets buckets of its own only if the server owner
//! listed it; every other path, made up or not, counts against the default
//! quota. The table is fixed when the layer is built and read without a lock,
//! so a peer cannot add entries to it.

use std::collections::HashMap;
use std::fmt;

use foldhash::fast::RandomState;
use governor::Quota;

/// The methods with a quota of their own, by request path; the index of a
/// method is the index of its limiter.
#[derive(Clone, Default)]
pub(super) struct Methods {
    index: HashMap<Box<str>, usize, RandomState>,
    quotas: Vec<(Box<str>, Quota)>,
}

impl Methods {
    /// Sets `path`'s quota (replacing an earlier one). `path` is the gRPC request
    /// path, `/package.Service/Method`; the leading `/` may be left out.
    pub(super) fn set(&mut self, path: &str, quota: Quota) {
        let path: Box<str> = if path.starts_with('/') {
            path.into()
        } else {
            format!("/{path}").into()
        };
        match self.index.get(&path) {
            Some(&i) => self.quotas[i].1 = quota,
            None => {
                self.index.insert(path.clone(), self.quotas.len());
                self.quotas.push((path, quota));
            }
        }
    }

    /// The index of the method answering at `path`, if it has its own quota.
    pub(super) fn find(&self, path: &str) -> Option<usize> {
        if self.quotas.is_empty() {
            return None;
        }
        self.index.get(path).copied()
    }

    /// Every method with its quota, in index order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, Quota)> {
        self.quotas.iter().map(|(path, quota)| (&**path, *quota))
    }

    /// The path of method `index`.
    pub(super) fn path(&self, index: usize) -> &str {
        &self.quotas[index].0
    }

    /// The path and quota of method `index`.
    #[cfg(feature = "redis")]
    pub(super) fn get(&self, index: usize) -> (&str, Quota) {
        let (path, quota) = &self.quotas[index];
        (path, *quota)
    }
}

impl fmt::Debug for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    #[test]
    fn paths_are_normalised_and_replaced() {
        let q = |n| Quota::per_second(NonZeroU32::new(n).unwrap());
        let mut methods = Methods::default();
        assert_eq!(methods.find("/a.B/C"), None);
        methods.set("a.B/C", q(1));
        methods.set("/a.B/D", q(2));
        methods.set("/a.B/C", q(3));
        assert_eq!(methods.find("/a.B/C"), Some(0));
        assert_eq!(methods.find("/a.B/D"), Some(1));
        assert_eq!(
            methods.find("a.B/C"),
            None,
            "requests always carry the slash"
        );
        assert_eq!(methods.iter().next(), Some(("/a.B/C", q(3))));
        assert_eq!(methods.path(1), "/a.B/D");
    }
}
