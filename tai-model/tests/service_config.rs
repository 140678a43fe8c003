//! The service-config reader against grpc-go's own parse tests
//! (`service_config_test.go`: `TestParseDuration`, `TestPraseTimeOut`,
//! `TestParseWaitForReady`, `TestPraseMsgSize`, `TestParseLoadBalancer`) and the
//! retry-policy, hedging and throttling rules of gRFC A6 as grpc-go applies them
//! (`convertRetryPolicy`, the `retryThrottling` range checks). Where grpc-go logs and
//! ignores an invalid retry policy, tai rejects it; each such case says so.

use std::time::Duration;

use tai_model::{
    Balancer, Code, Field, MethodName, PolicySpec, ServiceConfig, Toggle, Value,
    parse_json_duration,
};

/// The problems of `json`, each as `path: message`.
fn problems(json: &str) -> Vec<String> {
    match ServiceConfig::parse(json) {
        Ok(config) => panic!("accepted {json}: {config:?}"),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `json` is rejected with a problem at `path` whose message holds `words`.
#[track_caller]
fn rejects(json: &str, path: &str, words: &str) {
    let found = problems(json);
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&prefix) && p.contains(words)),
        "wanted `{path}: ..{words}..`, got {found:#?}"
    );
}

/// One methodConfig entry for `/foo/Bar` with `body` beside its name.
fn method(body: &str) -> String {
    format!(r#"{{"methodConfig": [{{"name": [{{"service": "foo", "method": "Bar"}}], {body}}}]}}"#)
}

fn spec_of(json: &str) -> PolicySpec {
    let config = ServiceConfig::parse(json).unwrap_or_else(|p| panic!("{p:?}"));
    config
        .lookup("foo", "Bar")
        .expect("an entry for foo/Bar")
        .spec
        .clone()
}

const RETRY: &str = r#""maxAttempts": 4, "initialBackoff": "0.01s", "maxBackoff": "1s",
    "backoffMultiplier": 1.5, "retryableStatusCodes": ["UNAVAILABLE"]"#;

fn retry_with(field: &str, value: &str) -> String {
    // Replaces one field of RETRY (or removes it when `value` is empty).
    let fields: Vec<String> = RETRY
        .split(",")
        .map(str::trim)
        .filter(|f| !f.starts_with(&format!("\"{field}\"")))
        .map(str::to_owned)
        .chain((!value.is_empty()).then(|| format!("\"{field}\": {value}")))
        .collect();
    method(&format!(r#""retryPolicy": {{{}}}"#, fields.join(", ")))
}

#[test]
fn durations_as_grpc_go_parses_them() {
    // TestParseDuration, case by case.
    let ok = [
        ("1s", Duration::from_secs(1)),
        ("1.1s", Duration::from_millis(1100)),
        ("1.s", Duration::from_secs(1)),
        ("1.0s", Duration::from_secs(1)),
        (".002s", Duration::from_millis(2)),
        (".002000s", Duration::from_millis(2)),
        ("0.003s", Duration::from_millis(3)),
        ("0.000004s", Duration::from_micros(4)),
        ("5000.000000009s", Duration::new(5000, 9)),
        ("4999.999999999s", Duration::new(4999, 999_999_999)),
        ("2147483647s", Duration::from_secs(i32::MAX as u64)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_json_duration(text), Ok(want), "{text}");
    }
    let bad = [
        "1",
        "s",
        ".s",
        "1 s",
        " 1s",
        "1ms",
        "1.1.1s",
        "Xs",
        "as",
        ".0000000001s",
        "2147483648s",
        // grpc-go reads "-1s" as a negative duration; no tai duration can be negative.
        "-1s",
    ];
    for text in bad {
        assert!(parse_json_duration(text).is_err(), "{text}");
    }
}

#[test]
fn timeout() {
    // TestPraseTimeOut.
    let spec = spec_of(&method(r#""timeout": "1s""#));
    assert_eq!(spec.timeout, Some(Toggle::On(Duration::from_secs(1))));
    rejects(
        &method(r#""timeout": "3c""#),
        "methodConfig[0].timeout",
        "`3c` is not a duration",
    );
    // The bad entry first, then a good one for the same name: still rejected, and
    // the repeated name with it.
    let json = r#"{"methodConfig": [
        {"name": [{"service": "foo", "method": "Bar"}], "timeout": "3c"},
        {"name": [{"service": "foo", "method": "Bar"}], "timeout": "1s"}]}"#;
    rejects(json, "methodConfig[0].timeout", "not a duration");
    rejects(
        json,
        "methodConfig[1].name[0]",
        "names `foo/Bar` again (first at methodConfig[0].name[0])",
    );
    rejects(
        &method(r#""timeout": 1"#),
        "methodConfig[0].timeout",
        "must be a string like \"1.5s\"",
    );
    rejects(
        &method(r#""timeout": "0s""#),
        "methodConfig[0].timeout",
        "must be greater than zero",
    );
}

#[test]
fn wait_for_ready_and_message_sizes_are_refused_until_supported() {
    // TestParseWaitForReady: grpc-go accepts true and false and rejects `fall`
    // (not JSON); tai reads them too, and refuses them as unsupported rather than
    // accepting a setting it would not act on.
    rejects(
        &method(r#""waitForReady": true"#),
        "methodConfig[0].waitForReady",
        "not supported yet",
    );
    rejects(
        &method(r#""waitForReady": false"#),
        "methodConfig[0].waitForReady",
        "not supported yet",
    );
    rejects(&method(r#""waitForReady": fall"#), "", "is not valid JSON");
    rejects(
        &method(r#""waitForReady": "yes""#),
        "methodConfig[0].waitForReady",
        "must be true or false",
    );
    // TestPraseMsgSize.
    rejects(
        &method(r#""maxRequestMessageBytes": 1024, "maxResponseMessageBytes": 2048"#),
        "methodConfig[0].maxRequestMessageBytes",
        "max_send_message_size",
    );
    rejects(
        &method(r#""maxResponseMessageBytes": 2048"#),
        "methodConfig[0].maxResponseMessageBytes",
        "not supported yet",
    );
}

#[test]
fn load_balancing_policy_is_tais_balancer() {
    // TestParseLoadBalancer: grpc-go takes "round_robin" and rejects 1.
    rejects(
        r#"{"loadBalancingPolicy": "round_robin"}"#,
        "loadBalancingPolicy",
        "\"tai\": { \"balancer\"",
    );
    let config = ServiceConfig::parse(r#"{"tai": {"balancer": "least_loaded"}}"#).unwrap();
    assert_eq!(config.client.balancer, Some(Balancer::LeastLoaded));
    rejects(
        r#"{"tai": {"balancer": "fastest"}}"#,
        "tai.balancer",
        "valid balancers are: round_robin",
    );
}

#[test]
fn a_valid_retry_policy() {
    let spec = spec_of(&method(&format!(r#""retryPolicy": {{{RETRY}}}"#)));
    let get = |f: Field| (f.def().get)(&spec);
    assert_eq!(get(Field::RetryMaxAttempts), Some(Value::Count(4)));
    assert_eq!(
        get(Field::RetryInitialBackoff),
        Some(Value::Duration(Duration::from_millis(10)))
    );
    assert_eq!(
        get(Field::RetryMaxBackoff),
        Some(Value::Duration(Duration::from_secs(1)))
    );
    assert_eq!(get(Field::RetryMultiplier), Some(Value::Number(1.5)));
    assert_eq!(
        get(Field::RetryCodes),
        Some(Value::Codes(vec![Code::Unavailable]))
    );
}

#[test]
fn invalid_retry_policies() {
    // grpc-go's convertRetryPolicy ignores (with a warning) a policy with
    // maxAttempts <= 1, a backoff <= 0, a multiplier <= 0 or no codes; tai rejects
    // each, naming the field.
    let at = "methodConfig[0].retryPolicy";
    let cases = [
        (
            "maxAttempts",
            "1",
            "maxAttempts",
            "is 1, but must be at least 2",
        ),
        (
            "maxAttempts",
            "0",
            "maxAttempts",
            "is 0, but must be at least 2",
        ),
        ("maxAttempts", "-1", "maxAttempts", "must be a whole number"),
        (
            "maxAttempts",
            "2.5",
            "maxAttempts",
            "must be a whole number",
        ),
        ("maxAttempts", "", "maxAttempts", "is required"),
        (
            "initialBackoff",
            r#""0s""#,
            "initialBackoff",
            "must be greater than zero",
        ),
        (
            "initialBackoff",
            r#""-1s""#,
            "initialBackoff",
            "it is negative",
        ),
        ("initialBackoff", "", "initialBackoff", "is required"),
        (
            "maxBackoff",
            r#""0s""#,
            "maxBackoff",
            "must be greater than zero",
        ),
        ("maxBackoff", r#""1m""#, "maxBackoff", "does not end in `s`"),
        ("maxBackoff", "", "maxBackoff", "is required"),
        (
            "backoffMultiplier",
            "0",
            "backoffMultiplier",
            "is 0, but must be greater than 0",
        ),
        (
            "backoffMultiplier",
            "-2",
            "backoffMultiplier",
            "must be greater than 0",
        ),
        (
            "backoffMultiplier",
            r#""2""#,
            "backoffMultiplier",
            "must be a number",
        ),
        ("backoffMultiplier", "", "backoffMultiplier", "is required"),
        (
            "retryableStatusCodes",
            "[]",
            "retryableStatusCodes",
            "is empty",
        ),
        (
            "retryableStatusCodes",
            "",
            "retryableStatusCodes",
            "is required",
        ),
        (
            "retryableStatusCodes",
            r#"["unavailable"]"#,
            "retryableStatusCodes[0]",
            "is not a status code",
        ),
        (
            "retryableStatusCodes",
            "[17]",
            "retryableStatusCodes[0]",
            "is not a status code",
        ),
        (
            "retryableStatusCodes",
            r#"["OK"]"#,
            "retryableStatusCodes",
            "cannot contain OK",
        ),
        (
            "retryableStatusCodes",
            r#""UNAVAILABLE""#,
            "retryableStatusCodes",
            "must be a list",
        ),
    ];
    for (field, value, path, words) in cases {
        rejects(&retry_with(field, value), &format!("{at}.{path}"), words);
    }
    rejects(&method(r#""retryPolicy": 3"#), at, "must be an object");
    rejects(
        &method(&format!(
            r#""retryPolicy": {{{RETRY}, "perAttemptRecvTimeout": "1s"}}"#
        )),
        &format!("{at}.perAttemptRecvTimeout"),
        "valid fields are: maxAttempts, initialBackoff",
    );
}

#[test]
fn retry_policy_as_grpc_go_reads_it() {
    // Keys without regard to case (grpc-go's own retry example writes "MaxAttempts"),
    // codes by number, and more than five attempts capped at five.
    let spec = spec_of(&method(
        r#""retryPolicy": {"MaxAttempts": 10, "InitialBackoff": ".01s", "MaxBackoff": ".01s",
            "BackoffMultiplier": 1.0, "RetryableStatusCodes": [14, "ABORTED", 14]}"#,
    ));
    assert_eq!(
        (Field::RetryMaxAttempts.def().get)(&spec),
        Some(Value::Count(5))
    );
    assert_eq!(
        (Field::RetryCodes.def().get)(&spec),
        Some(Value::Codes(vec![Code::Unavailable, Code::Aborted]))
    );
    rejects(
        &method(&format!(r#""retryPolicy": {{{RETRY}, "maxattempts": 3}}"#)),
        "methodConfig[0].retryPolicy.maxattempts",
        "repeats `maxAttempts`",
    );
}

#[test]
fn hedging_policies() {
    // A whole policy: no hedgingDelay means none, no nonFatalStatusCodes means none.
    let spec = spec_of(&method(r#""hedgingPolicy": {"maxAttempts": 3}"#));
    assert_eq!(
        (Field::HedgingDelay.def().get)(&spec),
        Some(Value::Duration(Duration::ZERO))
    );
    assert_eq!(
        (Field::HedgingNonFatalCodes.def().get)(&spec),
        Some(Value::Codes(vec![]))
    );
    let spec = spec_of(&method(
        r#""hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.5s", "nonFatalStatusCodes": ["UNAVAILABLE", 10]}"#,
    ));
    assert_eq!(
        (Field::HedgingNonFatalCodes.def().get)(&spec),
        Some(Value::Codes(vec![Code::Unavailable, Code::Aborted]))
    );
    let at = "methodConfig[0].hedgingPolicy";
    rejects(
        &method(r#""hedgingPolicy": {"maxAttempts": 1}"#),
        &format!("{at}.maxAttempts"),
        "at least 2",
    );
    rejects(
        &method(r#""hedgingPolicy": {}"#),
        &format!("{at}.maxAttempts"),
        "is required",
    );
    rejects(
        &method(r#""hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "soon"}"#),
        &format!("{at}.hedgingDelay"),
        "not a duration",
    );
    rejects(
        &method(r#""hedgingPolicy": {"maxAttempts": 2, "nonFatalStatusCodes": ["OK"]}"#),
        &format!("{at}.nonFatalStatusCodes"),
        "cannot contain OK",
    );
    // retryPolicy and hedgingPolicy are mutually exclusive (gRFC A6).
    rejects(
        &method(&format!(
            r#""retryPolicy": {{{RETRY}}}, "hedgingPolicy": {{"maxAttempts": 2}}"#
        )),
        at,
        "cannot be combined with retry",
    );
}

#[test]
fn retry_throttling() {
    let config =
        ServiceConfig::parse(r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#)
            .unwrap();
    assert_eq!(
        (Field::ThrottleMaxTokens.def().get)(&config.client),
        Some(Value::Count(10))
    );
    // grpc-go: maxTokens out of range (0, 1000], tokenRatio may not be <= 0.
    let throttle = |body: &str| format!(r#"{{"retryThrottling": {{{body}}}}}"#);
    rejects(
        &throttle(r#""maxTokens": 0, "tokenRatio": 0.1"#),
        "retryThrottling.maxTokens",
        "must be in 1..=1000",
    );
    rejects(
        &throttle(r#""maxTokens": 1001, "tokenRatio": 0.1"#),
        "retryThrottling.maxTokens",
        "must be in 1..=1000",
    );
    rejects(
        &throttle(r#""maxTokens": -1, "tokenRatio": 0.1"#),
        "retryThrottling.maxTokens",
        "whole number",
    );
    rejects(
        &throttle(r#""maxTokens": 10, "tokenRatio": 0"#),
        "retryThrottling.tokenRatio",
        "must be greater than 0",
    );
    rejects(
        &throttle(r#""maxTokens": 10, "tokenRatio": -0.1"#),
        "retryThrottling.tokenRatio",
        "must be greater than 0",
    );
    rejects(
        &throttle(r#""maxTokens": 10"#),
        "retryThrottling.tokenRatio",
        "is required",
    );
    // Throttling belongs to a client: not in a methodConfig entry.
    rejects(
        &method(r#""retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}"#),
        "methodConfig[0].retryThrottling",
        "is not a known field",
    );
}

#[test]
fn names() {
    let json = r#"{"methodConfig": [
        {"name": [{"service": "foo", "method": "Bar"}], "timeout": "1s"},
        {"name": [{"service": "foo"}], "timeout": "2s"},
        {"name": [{}], "timeout": "3s"}]}"#;
    let config = ServiceConfig::parse(json).unwrap();
    let timeout = |s: &str, m: &str| config.lookup(s, m).map(|c| c.spec.timeout.clone());
    // Most specific first: the method, then its service, then the default.
    assert_eq!(
        timeout("foo", "Bar"),
        Some(Some(Toggle::On(Duration::from_secs(1))))
    );
    assert_eq!(
        timeout("foo", "Baz"),
        Some(Some(Toggle::On(Duration::from_secs(2))))
    );
    assert_eq!(
        timeout("qux", "Bar"),
        Some(Some(Toggle::On(Duration::from_secs(3))))
    );
    assert_eq!(config.methods[2].names, [MethodName::Default]);
    // `{"service": ""}` is the default too; naming it twice is an error.
    rejects(
        r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#,
        "methodConfig[1].name[0]",
        "names the default (empty name) again",
    );
    rejects(
        r#"{"methodConfig": [{"name": [{"method": "Bar"}]}]}"#,
        "methodConfig[0].name[0].method",
        "needs a `service`",
    );
    rejects(
        r#"{"methodConfig": [{"timeout": "1s"}]}"#,
        "methodConfig[0].name",
        "is missing",
    );
    rejects(
        r#"{"methodConfig": [{"name": []}]}"#,
        "methodConfig[0].name",
        "is empty",
    );
    rejects(
        r#"{"methodConfig": [{"name": [{"service": 3}]}]}"#,
        "methodConfig[0].name[0].service",
        "must be a string",
    );
    rejects(r#"{"methodConfig": {}}"#, "methodConfig", "must be a list");
    rejects(r#"[]"#, "", "must be an object");
    rejects(
        r#"{"methodconfig": [], "extra": 1}"#,
        "extra",
        "valid fields are: methodConfig",
    );
}

#[test]
fn the_tai_object() {
    let spec = spec_of(&method(
        r#""tai": {"idempotent": true, "max_timeout": "5s",
                   "breaker": {"failure_threshold": 3, "window": "20s", "failure_codes": ["INTERNAL", 14]}}"#,
    ));
    assert_eq!(spec.idempotent, Some(true));
    assert_eq!(spec.max_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        (Field::BreakerFailureThreshold.def().get)(&spec),
        Some(Value::Count(3))
    );
    assert_eq!(
        (Field::BreakerWindow.def().get)(&spec),
        Some(Value::Duration(Duration::from_secs(20)))
    );
    assert_eq!(
        (Field::BreakerFailureCodes.def().get)(&spec),
        Some(Value::Codes(vec![Code::Internal, Code::Unavailable]))
    );
    let spec = spec_of(&method(r#""tai": {"breaker": {"disabled": true}}"#));
    assert_eq!(spec.breaker, Some(Toggle::Off));
    let spec = spec_of(&method(r#""tai": {"breaker": {"rate_disabled": true}}"#));
    assert_eq!(
        (Field::BreakerFailureRate.def().get)(&spec),
        Some(Value::Off)
    );

    let at = "methodConfig[0].tai";
    rejects(
        &method(r#""tai": {"breaker": {"failure_threshold": 0}}"#),
        &format!("{at}.breaker.failure_threshold"),
        "at least 1",
    );
    rejects(
        &method(r#""tai": {"breaker": {"failure_rate": 2}}"#),
        &format!("{at}.breaker.failure_rate"),
        "must be in (0, 1]",
    );
    rejects(
        &method(r#""tai": {"breaker": {"treshold": 2}}"#),
        &format!("{at}.breaker.treshold"),
        "valid fields are: failure_threshold",
    );
    rejects(
        &method(r#""tai": {"breaker": {"disabled": true, "window": "1s"}}"#),
        &format!("{at}.breaker.disabled"),
        "turns breaker off",
    );
    rejects(
        &method(r#""tai": {"breaker": {"rate_disabled": true, "window": "1s"}}"#),
        &format!("{at}.breaker.rate_disabled"),
        "window has no effect",
    );
    rejects(
        &method(r#""tai": {"idempotent": "yes"}"#),
        &format!("{at}.idempotent"),
        "must be true or false",
    );
    rejects(
        &method(r#""tai": {"retry": {}}"#),
        &format!("{at}.retry"),
        "write `retryPolicy` instead",
    );
    rejects(
        &method(r#""tai": {"balancer": "random"}"#),
        &format!("{at}.balancer"),
        "top-level `tai` object",
    );
    rejects(
        r#"{"tai": {"breaker": {}}}"#,
        "tai.breaker",
        "methodConfig entry's `tai` object",
    );
    rejects(
        &method(r#""tai": {"jitter": 1}"#),
        &format!("{at}.jitter"),
        "valid fields here are: idempotent, max_timeout, breaker",
    );
}

#[test]
fn every_problem_is_reported() {
    let found = problems(
        r#"{"methodConfig": [{"name": [{}], "timeout": "x",
            "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s",
                            "backoffMultiplier": 0, "retryableStatusCodes": ["UNAVAILABLE"]}}],
            "retryThrottling": {"maxTokens": 0, "tokenRatio": 1}}"#,
    );
    assert_eq!(found.len(), 4, "{found:#?}");
}
