//! grpc-go's retry tables — `TestRetryUnary` and `TestRetryThrottling` in its
//! `test/retry_test.go` — as data with one driver, shared by every test that
//! reproduces them: through the generated client's engine (`tests/retry.rs`),
//! through the tower layers under a tonic-style client (`tests/layers.rs`), and
//! through the layers under a client tonic-build generated
//! (`tests/compat/tests/layers.rs`, which includes this file with `#[path]`).
//!
//! It uses only tonic and `tai_runtime`, so that any test crate can include it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tai_runtime::policy::{CodeSet, RetryPolicy, ThrottlePolicy};
use tonic::{Code, Status};

/// One of grpc-go's tables: what the server answers, the client's policy, and
/// what each call in turn must end with.
pub struct Table {
    pub name: &'static str,
    pub retry: RetryPolicy,
    pub throttle: Option<ThrottlePolicy>,
    /// What the server answers to the call it sees `i`-th (from 0): `None` is
    /// a success.
    pub answer: fn(usize) -> Option<Status>,
    pub cases: &'static [Case],
}

/// What one call of a table must end with.
pub struct Case {
    pub code: Code,
    /// The index of the last call the server saw, once this call has ended.
    pub last_index: usize,
    /// The throttle's tokens after it, for a table with a throttle.
    pub tokens: f64,
}

const fn case(code: Code, last_index: usize, tokens: f64) -> Case {
    Case {
        code,
        last_index,
        tokens,
    }
}

fn retry_policy(max_attempts: u32, retryable: Code) -> RetryPolicy {
    RetryPolicy::new(
        max_attempts,
        Duration::from_millis(10),
        Duration::from_millis(10),
        1.0,
        CodeSet::of(&[retryable]),
    )
}

const UNARY_CASES: &[Case] = &[
    case(Code::Ok, 0, 0.0),
    case(Code::Ok, 2, 0.0),
    case(Code::Ok, 5, 0.0),
    case(Code::Internal, 6, 0.0),
    case(Code::Internal, 8, 0.0),
    case(Code::Internal, 11, 0.0),
    case(Code::AlreadyExists, 15, 0.0),
];

/// grpc-go `TestRetryUnary`: 4 attempts, ALREADY_EXISTS retryable, no throttle.
pub fn retry_unary() -> Table {
    Table {
        name: "TestRetryUnary",
        retry: retry_policy(4, Code::AlreadyExists),
        throttle: None,
        answer: |i| match i {
            0 | 2 | 5 => None,
            6 | 8 | 11 => Some(Status::internal("non-retryable error")),
            _ => Some(Status::already_exists("retryable error")),
        },
        cases: UNARY_CASES,
    }
}

const THROTTLING_CASES: &[Case] = &[
    case(Code::Ok, 0, 10.0),
    case(Code::Ok, 3, 8.5),
    case(Code::Ok, 6, 7.0),
    case(Code::Unavailable, 8, 5.0),
    case(Code::Unavailable, 9, 4.0),
    case(Code::Ok, 10, 4.5),
    case(Code::Ok, 11, 5.0),
    case(Code::Ok, 12, 5.5),
    case(Code::Ok, 13, 6.0),
    case(Code::Ok, 14, 6.5),
    case(Code::Ok, 16, 6.0),
    case(Code::Unavailable, 17, 5.0),
];

/// grpc-go `TestRetryThrottling`: 4 attempts, UNAVAILABLE retryable, a throttle
/// of 10 tokens refilling 0.5 per success; 12 calls.
pub fn retry_throttling() -> Table {
    Table {
        name: "TestRetryThrottling",
        retry: retry_policy(4, Code::Unavailable),
        throttle: Some(ThrottlePolicy::new(10, 0.5)),
        answer: |i| match i {
            0 | 3 | 6 | 10 | 11 | 12 | 13 | 14 | 16 | 18 => None,
            _ => Some(Status::unavailable("retryable error")),
        },
        cases: THROTTLING_CASES,
    }
}

impl Table {
    /// Makes the table's calls in turn with `call` (one call, ending with its
    /// code) and checks each: its code, how many calls the server has seen
    /// (`calls`), and, for a table with a throttle, its tokens (`tokens`).
    pub async fn run<F, Fut>(
        &self,
        mut call: F,
        calls: impl Fn() -> usize,
        tokens: impl Fn() -> f64,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Code>,
    {
        for (n, want) in self.cases.iter().enumerate() {
            let code = call().await;
            assert_eq!(code, want.code, "{} case {n}", self.name);
            assert_eq!(calls() - 1, want.last_index, "{} case {n}", self.name);
            if self.throttle.is_some() {
                let now = tokens();
                assert!(
                    (now - want.tokens).abs() < 1e-9,
                    "{} case {n}: {now} tokens, want {}",
                    self.name,
                    want.tokens
                );
            }
        }
    }
}

/// The code a call ended with.
pub fn code_of<T>(result: &Result<T, Status>) -> Code {
    result.as_ref().err().map_or(Code::Ok, Status::code)
}
