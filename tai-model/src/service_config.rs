//! The gRPC service config — the JSON of gRFC A2 and A6 (`methodConfig`,
//! `retryPolicy`, `hedgingPolicy`, `retryThrottling`) — read into policy levels.
//!
//! This is a third front end of the one grammar, beside the `.proto` options and the
//! `#[resilient]` attribute: it turns JSON into a [`PolicySpec`] per `methodConfig`
//! entry (and one for the whole client), and reports values it cannot read with their
//! JSON path (`methodConfig[2].retryPolicy.maxAttempts: ...`). The rules about values
//! are the shared validator's ([`check_level`] now, [`validate`](crate::validate) once
//! the levels are combined with a compiled policy); the standard field names are one
//! table here ([`STANDARD`]) and tai's own fields are the grammar table's, so no key is
//! written twice. tai-build (at build time) and tai-runtime (at run time) both read
//! configs through [`ServiceConfig::parse`].
//!
//! It reads what grpc-go reads, the way grpc-go reads it: standard keys match without
//! regard to case (Go's `encoding/json`), durations are `"1.5s"` strings with at most
//! nine fractional digits, codes are upper-case names or numbers, `maxAttempts` above
//! 5 is capped at 5, and a name is `{"service", "method"}` (an empty one is the default
//! for every method). Where grpc-go logs and ignores a bad retry policy, tai rejects it:
//! a config that silently does less than it says is the failure tai exists to prevent.
//! Likewise a field tai does not act on yet (`waitForReady`, message sizes, load
//! balancing config) is rejected as "not supported yet", never accepted and ignored.
//!
//! Fields the JSON has no word for — tai's breaker, balancer, `idempotent`,
//! `max_timeout` — go in a `tai` object, per `methodConfig` entry or (for the
//! balancer, which is chosen per client) at the top, keyed by the grammar's proto
//! field names:
//!
//! ```json
//! {
//!   "methodConfig": [{
//!     "name": [{ "service": "tai.v1.Governor", "method": "ProposePolicy" }],
//!     "timeout": "2s",
//!     "retryPolicy": {
//!       "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
//!       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
//!     },
//!     "tai": { "idempotent": true, "breaker": { "failure_threshold": 3 } }
//!   }],
//!   "retryThrottling": { "maxTokens": 10, "tokenRatio": 0.1 },
//!   "tai": { "balancer": "least_loaded" }
//! }
//! ```
//!
//! A JSON policy object is whole, as in gRPC: a `hedgingPolicy` without
//! `hedgingDelay` hedges with no delay, not with an inherited one. Between objects the
//! JSON is one more level: what an entry does not mention (no `retryPolicy`, no
//! `tai.breaker`) is inherited from the levels below it.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value as Json};

use crate::grammar::{FieldDef, Value, ValueKind};
use crate::{
    Balancer, Code, Field, MAX_ATTEMPTS_CAP, MethodKind, PolicySpec, check_level, parse_duration,
};

/// A standard service-config field: the grammar row it writes, its JSON key, and
/// whether a policy object must have it (gRPC treats a missing one as zero, which is
/// invalid).
struct Standard {
    field: Field,
    key: &'static str,
    required: bool,
}

/// The standard JSON names of grammar rows, a sub-policy's fields after it. Rows not
/// listed have no standard word and are written in the `tai` object.
#[rustfmt::skip]
const STANDARD: &[Standard] = &[
    Standard { field: Field::Timeout, key: "timeout", required: false },
    Standard { field: Field::Retry, key: "retryPolicy", required: false },
    Standard { field: Field::RetryMaxAttempts, key: "maxAttempts", required: true },
    Standard { field: Field::RetryInitialBackoff, key: "initialBackoff", required: true },
    Standard { field: Field::RetryMaxBackoff, key: "maxBackoff", required: true },
    Standard { field: Field::RetryMultiplier, key: "backoffMultiplier", required: true },
    Standard { field: Field::RetryCodes, key: "retryableStatusCodes", required: true },
    Standard { field: Field::Hedging, key: "hedgingPolicy", required: false },
    Standard { field: Field::HedgingMaxAttempts, key: "maxAttempts", required: true },
    Standard { field: Field::HedgingDelay, key: "hedgingDelay", required: false },
    Standard { field: Field::HedgingNonFatalCodes, key: "nonFatalStatusCodes", required: false },
    Standard { field: Field::Throttle, key: "retryThrottling", required: false },
    Standard { field: Field::ThrottleMaxTokens, key: "maxTokens", required: true },
    Standard { field: Field::ThrottleTokenRatio, key: "tokenRatio", required: true },
];

/// Rows that belong to a whole client, written at the top of the config.
const CLIENT_WIDE: &[Field] = &[Field::Throttle, Field::Balancer];

/// Standard keys of a `methodConfig` entry that tai does not act on yet, and why.
const UNSUPPORTED_METHOD_KEYS: &[(&str, &str)] = &[
    (
        "waitForReady",
        "is not supported yet: tai has no per-method wait-for-ready switch; remove it",
    ),
    (
        "maxRequestMessageBytes",
        "is not supported yet: set the client's limit with \
         ClientConfig.connection.max_send_message_size; remove it",
    ),
    (
        "maxResponseMessageBytes",
        "is not supported yet: set the client's limit with \
         ClientConfig.connection.max_receive_message_size; remove it",
    ),
];

/// Standard top-level keys that tai does not act on yet, and why.
const UNSUPPORTED_TOP_KEYS: &[(&str, &str)] = &[
    (
        "loadBalancingPolicy",
        "is not supported yet: choose tai's balancer with `\"tai\": { \"balancer\": .. }`",
    ),
    (
        "loadBalancingConfig",
        "is not supported yet: choose tai's balancer with `\"tai\": { \"balancer\": .. }`",
    ),
    ("healthCheckConfig", "is not supported yet; remove it"),
];

/// The key of the tai extension object.
const TAI: &str = "tai";

/// The field of a `tai` sub-policy object that turns it off (`"breaker": {"disabled": true}`).
const DISABLED: &str = "disabled";

/// A service config, read and checked level by level.
///
/// ```
/// use tai_model::{MethodName, ServiceConfig};
/// let config = ServiceConfig::parse(r#"{
///   "methodConfig": [{
///     "name": [{ "service": "demo.Echo" }],
///     "timeout": "1.5s"
///   }]
/// }"#).unwrap();
/// let entry = config.lookup("demo.Echo", "Say").unwrap();
/// assert_eq!(entry.names, [MethodName::Service("demo.Echo".into())]);
///
/// let err = ServiceConfig::parse(r#"{"methodConfig": [{"name": [{}],
///   "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s",
///                   "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#)
///     .unwrap_err();
/// assert_eq!(
///     err[0].to_string(),
///     "methodConfig[0].retryPolicy.maxAttempts: is 1, but must be at least 2"
/// );
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceConfig {
    /// What the whole client gets: `retryThrottling` and the top-level `tai` object.
    pub client: PolicySpec,
    /// Every `methodConfig` entry, in order.
    pub methods: Vec<MethodConfig>,
}

/// One `methodConfig` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodConfig {
    /// Its position in `methodConfig`, for messages.
    pub index: usize,
    /// The methods it applies to.
    pub names: Vec<MethodName>,
    /// What it says, as one policy level.
    pub spec: PolicySpec,
}

/// A `name` of a `methodConfig` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MethodName {
    /// `{}`: every method that no other entry names.
    Default,
    /// `{"service": "pkg.Svc"}`: every method of the service that no entry names
    /// by method.
    Service(String),
    /// `{"service": "pkg.Svc", "method": "Get"}`.
    Method {
        /// The fully qualified service name.
        service: String,
        /// The method's proto name.
        method: String,
    },
}

impl fmt::Display for MethodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodName::Default => f.write_str("the default (empty name)"),
            MethodName::Service(s) => write!(f, "`{s}`"),
            MethodName::Method { service, method } => write!(f, "`{service}/{method}`"),
        }
    }
}

/// Something wrong in a service config, at a JSON path.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigProblem {
    /// Where: `methodConfig[2].retryPolicy.maxAttempts`; empty for the whole text.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigProblem {}

impl MethodConfig {
    /// The entry's path, `methodConfig[2]`.
    pub fn path(&self) -> String {
        format!("methodConfig[{}]", self.index)
    }
}

impl ServiceConfig {
    /// Reads a service config, returning every problem found (never just the first).
    pub fn parse(json: &str) -> Result<ServiceConfig, Vec<ConfigProblem>> {
        let value: Json = serde_json::from_str(json).map_err(|e| {
            vec![ConfigProblem {
                path: String::new(),
                message: format!("is not valid JSON: {e}"),
            }]
        })?;
        let mut reader = Reader::default();
        let config = reader.config(&value);
        if reader.problems.is_empty() {
            Ok(config)
        } else {
            Err(reader.problems)
        }
    }

    /// The entry that applies to a method, as gRPC chooses it: the one naming the
    /// method, else the one naming its service, else the default; `None` if none does.
    pub fn lookup(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        let find = |want: &dyn Fn(&MethodName) -> bool| {
            self.methods.iter().find(|m| m.names.iter().any(want))
        };
        find(&|n| {
            matches!(n, MethodName::Method { service: s, method: m } if s == service && m == method)
        })
        .or_else(|| find(&|n| matches!(n, MethodName::Service(s) if s == service)))
        .or_else(|| find(&|n| *n == MethodName::Default))
    }

    /// The entry for a method and the level it adds to the method's policy. A method
    /// whose requests are a stream cannot be retried or hedged: an entry naming its
    /// service or the default leaves retry and hedging out for it (as an inherited
    /// policy would), while one naming the method itself keeps them, so that the
    /// validator rejects them there.
    pub fn level_for(
        &self,
        service: &str,
        method: &str,
        kind: MethodKind,
    ) -> Option<(&MethodConfig, PolicySpec)> {
        let entry = self.lookup(service, method)?;
        let mut spec = entry.spec.clone();
        let named = entry.names.iter().any(
            |n| matches!(n, MethodName::Method { service: s, method: m } if s == service && m == method),
        );
        if kind.streams_requests() && !named {
            spec.retry = None;
            spec.hedging = None;
        }
        Some((entry, spec))
    }
}

/// Where a field is written in a service config, below its level: a standard key
/// (`retryPolicy.maxAttempts`), else in the `tai` object by its proto path
/// (`tai.breaker.failure_threshold`).
///
/// ```
/// use tai_model::{Field, json_path};
/// assert_eq!(json_path(Field::RetryMultiplier), "retryPolicy.backoffMultiplier");
/// assert_eq!(json_path(Field::BreakerWindow), "tai.breaker.window");
/// ```
pub fn json_path(field: Field) -> String {
    match standard(field) {
        Some(s) => match field.parent().and_then(standard) {
            Some(parent) => format!("{}.{}", parent.key, s.key),
            None => s.key.to_owned(),
        },
        None => format!("{TAI}.{}", field.proto_path()),
    }
}

fn standard(field: Field) -> Option<&'static Standard> {
    STANDARD.iter().find(|s| s.field == field)
}

/// Joins a path and a key.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Reads JSON, collecting problems.
#[derive(Default)]
struct Reader {
    problems: Vec<ConfigProblem>,
}

impl Reader {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The object at `path`, or a problem.
    fn object<'a>(&mut self, path: &str, value: &'a Json) -> Option<&'a Map<String, Json>> {
        let object = value.as_object();
        if object.is_none() {
            self.fail(path, format!("must be an object, not {}", kind(value)));
        }
        object
    }

    /// The entries of a standard object by their canonical keys (matched without
    /// regard to case, as grpc-go's `encoding/json` does). Unknown and repeated keys
    /// are problems.
    fn standard_entries<'a>(
        &mut self,
        path: &str,
        object: &'a Map<String, Json>,
        known: &[&'static str],
    ) -> HashMap<&'static str, &'a Json> {
        let mut entries = HashMap::new();
        for (key, value) in object {
            match known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
                Some(k) if entries.insert(*k, value).is_some() => {
                    self.fail(&join(path, key), format!("repeats `{k}`"));
                }
                Some(_) => {}
                None => self.fail(
                    &join(path, key),
                    format!(
                        "is not a known field; valid fields are: {}",
                        known.join(", ")
                    ),
                ),
            }
        }
        entries
    }

    fn config(&mut self, value: &Json) -> ServiceConfig {
        let mut config = ServiceConfig::default();
        let Some(object) = self.object("", value) else {
            return config;
        };
        let mut known = vec!["methodConfig", "retryThrottling", TAI];
        known.extend(UNSUPPORTED_TOP_KEYS.iter().map(|(k, _)| *k));
        let entries = self.standard_entries("", object, &known);
        self.unsupported(&entries, "", UNSUPPORTED_TOP_KEYS);
        if let Some(v) = entries.get("retryThrottling") {
            self.standard_policy(Field::Throttle, "", v, &mut config.client);
        }
        if let Some(v) = entries.get(TAI) {
            self.tai(TAI, v, true, &mut config.client);
        }
        for problem in check_level(&config.client, false) {
            self.fail(&json_path(problem.field), problem.kind.to_string());
        }
        if let Some(list) = entries.get("methodConfig") {
            match list.as_array() {
                Some(list) => {
                    let mut seen: HashMap<MethodName, String> = HashMap::new();
                    for (index, entry) in list.iter().enumerate() {
                        if let Some(m) = self.method_config(index, entry, &mut seen) {
                            config.methods.push(m);
                        }
                    }
                }
                None => self.fail(
                    "methodConfig",
                    format!("must be a list, not {}", kind(list)),
                ),
            }
        }
        config
    }

    fn unsupported(
        &mut self,
        entries: &HashMap<&'static str, &Json>,
        path: &str,
        keys: &[(&str, &str)],
    ) {
        for (key, why) in keys {
            if entries.contains_key(key) {
                self.fail(&join(path, key), *why);
            }
        }
    }

    fn method_config(
        &mut self,
        index: usize,
        value: &Json,
        seen: &mut HashMap<MethodName, String>,
    ) -> Option<MethodConfig> {
        let path = format!("methodConfig[{index}]");
        let object = self.object(&path, value)?;
        let mut known = vec!["name", "timeout", "retryPolicy", "hedgingPolicy", TAI];
        known.extend(UNSUPPORTED_METHOD_KEYS.iter().map(|(k, _)| *k));
        let entries = self.standard_entries(&path, object, &known);
        // Read the unsupported values' types first, as grpc-go does, so that a
        // wrong type is named as such; then refuse them.
        if let Some(v) = entries.get("waitForReady").filter(|v| !v.is_boolean()) {
            self.fail(
                &join(&path, "waitForReady"),
                format!("must be true or false, not {}", kind(v)),
            );
        }
        self.unsupported(&entries, &path, UNSUPPORTED_METHOD_KEYS);

        let names = match entries.get("name") {
            Some(v) => self.names(&path, v, seen),
            None => Vec::new(),
        };
        if names.is_empty() && !entries.contains_key("name") {
            self.fail(
                &join(&path, "name"),
                "is missing: an entry without a name applies to no method; write \
                 `\"name\": [{}]` for every method",
            );
        }
        let mut spec = PolicySpec::default();
        if let Some(v) = entries.get("timeout") {
            let p = join(&path, "timeout");
            if let Some(d) = self.json_duration(&p, v) {
                (Field::Timeout.def().set)(&mut spec, Value::Duration(d));
            }
        }
        for field in [Field::Retry, Field::Hedging] {
            if let Some(v) = standard(field).and_then(|s| entries.get(s.key)) {
                self.standard_policy(field, &path, v, &mut spec);
            }
        }
        if let Some(v) = entries.get(TAI) {
            self.tai(&join(&path, TAI), v, false, &mut spec);
        }
        for problem in check_level(&spec, true) {
            self.fail(
                &join(&path, &json_path(problem.field)),
                problem.kind.to_string(),
            );
        }
        Some(MethodConfig { index, names, spec })
    }

    fn names(
        &mut self,
        path: &str,
        value: &Json,
        seen: &mut HashMap<MethodName, String>,
    ) -> Vec<MethodName> {
        let path = join(path, "name");
        let Some(list) = value.as_array() else {
            self.fail(&path, format!("must be a list, not {}", kind(value)));
            return Vec::new();
        };
        if list.is_empty() {
            self.fail(
                &path,
                "is empty: the entry applies to no method; write `[{}]` for every method",
            );
        }
        let mut names = Vec::new();
        for (i, name) in list.iter().enumerate() {
            let path = format!("{path}[{i}]");
            let Some(object) = self.object(&path, name) else {
                continue;
            };
            let entries = self.standard_entries(&path, object, &["service", "method"]);
            let mut text = |key: &str| -> Option<String> {
                let v = entries.get(key)?;
                let s = v.as_str().map(str::to_owned);
                if s.is_none() {
                    self.fail(
                        &join(&path, key),
                        format!("must be a string, not {}", kind(v)),
                    );
                }
                s
            };
            let service = text("service").unwrap_or_default();
            let method = text("method").unwrap_or_default();
            let name = match (service.is_empty(), method.is_empty()) {
                (true, true) => MethodName::Default,
                (false, true) => MethodName::Service(service),
                (false, false) => MethodName::Method { service, method },
                (true, false) => {
                    self.fail(
                        &join(&path, "method"),
                        "needs a `service`: a method name alone names nothing",
                    );
                    continue;
                }
            };
            if let Some(first) = seen.get(&name) {
                self.fail(
                    &path,
                    format!("names {name} again (first at {first}): each name may appear once"),
                );
                continue;
            }
            seen.insert(name.clone(), path.clone());
            names.push(name);
        }
        names
    }

    /// A standard policy object (`retryPolicy`, `hedgingPolicy`, `retryThrottling`):
    /// its fields from [`STANDARD`], the required ones checked, the others at their
    /// gRPC zero value when absent (the object is the whole policy).
    fn standard_policy(&mut self, field: Field, base: &str, value: &Json, spec: &mut PolicySpec) {
        let Some(me) = standard(field) else {
            return;
        };
        let path = join(base, me.key);
        let Some(object) = self.object(&path, value) else {
            return;
        };
        let children: Vec<&Standard> = STANDARD
            .iter()
            .filter(|s| s.field.parent() == Some(field))
            .collect();
        let keys: Vec<&'static str> = children.iter().map(|s| s.key).collect();
        let entries = self.standard_entries(&path, object, &keys);
        (field.def().set)(spec, Value::On);
        for child in children {
            let def = child.field.def();
            let child_path = join(&path, child.key);
            let value = match entries.get(child.key) {
                Some(v) => self.standard_value(&child_path, def, v),
                None if child.required => {
                    self.fail(&child_path, "is required");
                    None
                }
                None => zero(def.kind),
            };
            if let Some(value) = value {
                (def.set)(spec, value);
            }
        }
    }

    /// A standard field's value, read as grpc-go reads it.
    fn standard_value(&mut self, path: &str, def: &FieldDef, value: &Json) -> Option<Value> {
        match def.kind {
            ValueKind::Duration | ValueKind::DurationOrNone => {
                self.json_duration(path, value).map(Value::Duration)
            }
            // grpc-go caps attempts at 5 rather than refusing more.
            ValueKind::Count if def.parent != Some(Field::Throttle) => self
                .count(path, value)
                .map(|n| Value::Count(n.min(MAX_ATTEMPTS_CAP))),
            _ => self.tai_value(path, def, value),
        }
    }

    /// A whole number that fits a `u32`.
    fn count(&mut self, path: &str, value: &Json) -> Option<u32> {
        let n = value.as_u64().or_else(|| {
            // `3.0` is a whole number too (Go reads JSON numbers as floats).
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        });
        match n.and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.fail(
                    path,
                    format!("must be a whole number from 0 to {}, not {value}", u32::MAX),
                );
                None
            }
        }
    }

    fn number(&mut self, path: &str, value: &Json) -> Option<f64> {
        let n = value.as_f64();
        if n.is_none() {
            self.fail(path, format!("must be a number, not {}", kind(value)));
        }
        n
    }

    fn string<'a>(&mut self, path: &str, value: &'a Json, like: &str) -> Option<&'a str> {
        let s = value.as_str();
        if s.is_none() {
            self.fail(
                path,
                format!("must be a string like {like}, not {}", kind(value)),
            );
        }
        s
    }

    /// A duration in the protobuf JSON form, `"1.5s"`.
    fn json_duration(&mut self, path: &str, value: &Json) -> Option<Duration> {
        let text = self.string(path, value, "\"1.5s\"")?;
        match parse_json_duration(text) {
            Ok(d) => Some(d),
            Err(message) => {
                self.fail(path, message);
                None
            }
        }
    }

    /// Status codes: a list of upper-case names or numbers. Unknown ones are reported
    /// and left out; repeats are dropped.
    fn codes(&mut self, path: &str, value: &Json) -> Option<Vec<Code>> {
        let Some(list) = value.as_array() else {
            self.fail(
                path,
                format!("must be a list of status codes, not {}", kind(value)),
            );
            return None;
        };
        let mut codes = Vec::new();
        let mut bad = false;
        for (i, item) in list.iter().enumerate() {
            let code = match item {
                Json::String(name) => Code::ALL.into_iter().find(|c| c.name() == name),
                Json::Number(n) => n
                    .as_u64()
                    .and_then(|n| Code::ALL.into_iter().find(|c| *c as u64 == n)),
                _ => None,
            };
            match code {
                Some(c) if !codes.contains(&c) => codes.push(c),
                Some(_) => {}
                None => {
                    bad = true;
                    self.fail(
                        &format!("{path}[{i}]"),
                        format!(
                            "is not a status code: {item}; write a name ({}) or a number 0..=16",
                            Code::valid_names()
                        ),
                    );
                }
            }
        }
        // Only bad codes: leave the field unset rather than empty, which would add a
        // second, misleading problem.
        (!bad || !codes.is_empty()).then_some(codes)
    }

    /// A `tai` extension object: the grammar's rows with no standard word, keyed by
    /// their proto names. `client` says whether it is the top-level one, which holds
    /// what belongs to a whole client (and only that).
    fn tai(&mut self, path: &str, value: &Json, client: bool, spec: &mut PolicySpec) {
        let Some(object) = self.object(path, value) else {
            return;
        };
        for (key, value) in object {
            let key_path = join(path, key);
            let Some(def) = Field::children(None).find(|d| d.proto == key) else {
                let valid: Vec<&str> = Field::children(None)
                    .filter(|d| standard(d.field).is_none())
                    .filter(|d| CLIENT_WIDE.contains(&d.field) == client)
                    .map(|d| d.proto)
                    .collect();
                self.fail(
                    &key_path,
                    format!(
                        "is not a tai field; valid fields here are: {}",
                        valid.join(", ")
                    ),
                );
                continue;
            };
            if let Some(s) = standard(def.field) {
                self.fail(
                    &key_path,
                    format!("has a standard field: write `{}` instead", s.key),
                );
                continue;
            }
            if CLIENT_WIDE.contains(&def.field) != client {
                let message = if client {
                    "is set per method: write it in a methodConfig entry's `tai` object \
                     (with `\"name\": [{}]` for every method)"
                } else {
                    "is chosen per client: write it in the top-level `tai` object"
                };
                self.fail(&key_path, message);
                continue;
            }
            if let Some(value) = self.tai_value(&key_path, def, value) {
                (def.set)(spec, value);
            }
            if matches!(def.kind, ValueKind::Policy { .. })
                && let Some(object) = value.as_object()
                && object.get(DISABLED) != Some(&Json::Bool(true))
            {
                self.tai_fields(&key_path, def.field, object, spec);
            }
        }
    }

    /// The fields of a `tai` sub-policy object that is on.
    fn tai_fields(
        &mut self,
        path: &str,
        parent: Field,
        object: &Map<String, Json>,
        spec: &mut PolicySpec,
    ) {
        let mut rules_off = Vec::new();
        for (key, value) in object {
            let key_path = join(path, key);
            if key == DISABLED {
                continue;
            }
            if let Some(def) = Field::children(Some(parent))
                .find(|d| matches!(d.kind, ValueKind::Rule { proto_off, .. } if proto_off == key))
            {
                match value {
                    Json::Bool(true) => rules_off.push(def),
                    Json::Bool(false) => {}
                    other => self.fail(
                        &key_path,
                        format!("must be true or false, not {}", kind(other)),
                    ),
                }
                continue;
            }
            let Some(def) = Field::children(Some(parent)).find(|d| d.proto == key) else {
                let mut valid: Vec<&str> = Field::children(Some(parent)).map(|d| d.proto).collect();
                valid.extend(Field::children(Some(parent)).filter_map(|d| match d.kind {
                    ValueKind::Rule { proto_off, .. } => Some(proto_off),
                    _ => None,
                }));
                valid.push(DISABLED);
                self.fail(
                    &key_path,
                    format!(
                        "is not a field here; valid fields are: {}",
                        valid.join(", ")
                    ),
                );
                continue;
            };
            if let Some(value) = self.tai_value(&key_path, def, value) {
                (def.set)(spec, value);
            }
        }
        for def in rules_off {
            let ValueKind::Rule { rule, proto_off } = def.kind else {
                continue;
            };
            (def.set)(spec, Value::Off);
            let silenced: Vec<&str> = Field::children(Some(parent))
                .filter(|d| d.field == def.field || (d.get)(spec).is_none())
                .map(|d| d.proto)
                .filter(|k| object.contains_key(*k))
                .collect();
            if !silenced.is_empty() {
                self.fail(
                    &join(path, proto_off),
                    format!(
                        "turns {rule} off, so {} has no effect; remove it or `{proto_off}`",
                        silenced.join(", ")
                    ),
                );
            }
        }
    }

    /// A value of a `tai` field, by the kind its grammar row gives. A sub-policy is
    /// `{"disabled": true}` (off, alone) or an object of fields (on).
    fn tai_value(&mut self, path: &str, def: &FieldDef, value: &Json) -> Option<Value> {
        match def.kind {
            ValueKind::Flag => {
                let b = value.as_bool();
                if b.is_none() {
                    self.fail(path, format!("must be true or false, not {}", kind(value)));
                }
                b.map(Value::Flag)
            }
            ValueKind::Duration | ValueKind::DurationOrNone => {
                let text = self.string(path, value, "\"250ms\"")?;
                if text.trim() == "none" && def.kind == ValueKind::DurationOrNone {
                    return Some(Value::Off);
                }
                match parse_duration(text) {
                    Ok(d) => Some(Value::Duration(d)),
                    Err(message) => {
                        self.fail(path, message);
                        None
                    }
                }
            }
            ValueKind::Count => self.count(path, value).map(Value::Count),
            ValueKind::Number | ValueKind::Rule { .. } => {
                self.number(path, value).map(Value::Number)
            }
            ValueKind::Codes => self.codes(path, value).map(Value::Codes),
            ValueKind::Balancer => {
                let text = self.string(path, value, "\"least_loaded\"")?;
                let b = Balancer::from_name(text);
                if b.is_none() {
                    self.fail(
                        path,
                        format!(
                            "unknown balancer `{text}`; valid balancers are: {}",
                            Balancer::valid_names()
                        ),
                    );
                }
                b.map(Value::Balancer)
            }
            ValueKind::Names => {
                self.fail(path, SERVER_ONLY);
                None
            }
            ValueKind::Policy { .. } if def.field == Field::Auth => {
                self.fail(path, SERVER_ONLY);
                None
            }
            ValueKind::Policy { .. } => {
                let object = self.object(path, value)?;
                if object.get(DISABLED) == Some(&Json::Bool(true)) {
                    let others: Vec<&str> = object
                        .keys()
                        .map(String::as_str)
                        .filter(|k| *k != DISABLED)
                        .collect();
                    if !others.is_empty() {
                        self.fail(
                            &join(path, DISABLED),
                            format!(
                                "turns {} off, so {} has no effect; remove it or `{DISABLED}`",
                                def.proto,
                                others.join(", ")
                            ),
                        );
                    }
                    Some(Value::Off)
                } else {
                    Some(Value::On)
                }
            }
        }
    }
}

/// Why a service config cannot hold access rules.
const SERVER_ONLY: &str = "access rules are checked by the server: declare them in the .proto \
                           file or the #[resilient] attribute, not in a client's service config";

/// The value gRPC gives an absent optional field of a policy object.
fn zero(kind: ValueKind) -> Option<Value> {
    match kind {
        ValueKind::Duration => Some(Value::Duration(Duration::ZERO)),
        ValueKind::Codes => Some(Value::Codes(Vec::new())),
        _ => None,
    }
}

/// What a JSON value is, for messages.
fn kind(value: &Json) -> String {
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) => format!("the string {s:?}"),
        Json::Array(_) => "a list".to_owned(),
        Json::Object(_) => "an object".to_owned(),
    }
}

/// Parses a duration in the protobuf JSON form grpc-go reads: seconds with up to nine
/// fractional digits and an `s`, `"1s"`, `"1.5s"`, `".002s"`, `"1.s"`; whole seconds
/// at most `i32::MAX`; nothing around it.
///
/// ```
/// use std::time::Duration;
/// use tai_model::parse_json_duration;
/// assert_eq!(parse_json_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_json_duration(".002s"), Ok(Duration::from_millis(2)));
/// assert!(parse_json_duration("1ms").is_err());
/// ```
pub fn parse_json_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        Err(format!(
            "`{text}` is not a duration: {why}; write seconds like \"1.5s\""
        ))
    };
    let Some(number) = text.strip_suffix('s') else {
        return bad("it does not end in `s`");
    };
    if number.starts_with('-') {
        return bad("it is negative");
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return bad("it is not a number of seconds");
    }
    if fraction.len() > 9 {
        return bad("it has more than nine fractional digits");
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        match whole.parse::<u64>() {
            Ok(s) if s <= i32::MAX as u64 => s,
            _ => return bad("it is too large"),
        }
    };
    let nanos = if fraction.is_empty() {
        0
    } else {
        // Parsed as digits and scaled exactly: "0.1s" is 100 000 000 ns, not a float's guess.
        let n: u32 = fraction.parse().map_err(|_| "unreachable".to_owned())?;
        n * 10u32.pow(9 - fraction.len() as u32)
    };
    Ok(Duration::new(secs, nanos))
}
