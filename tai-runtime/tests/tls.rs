//! mTLS tests (in progress).
