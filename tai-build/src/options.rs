//! Reading `(tai.v1.file)`, `(tai.v1.service)` and `(tai.v1.method)` into the shared
//! model's [`PolicySpec`].
//!
//! The options are read with prost-reflect from the descriptor pool protox built,
//! because that pool keeps extension options (`prost_types` descriptors drop them).
//! This is only the proto front end: it turns fields into values and reports values
//! it cannot read (a bad duration, an unknown code). Every rule about what a policy
//! may say lives in `tai_model::validate`.

use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, Value};
use tai_model::{
    Balancer, BreakerSpec, Code, HedgingSpec, PolicySpec, RateRuleSpec, RetrySpec, ThrottleSpec,
    Toggle, parse_duration,
};

/// A level of policy: the file, a service or a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Scope {
    File,
    Service,
    Method,
}

impl Scope {
    /// The scopes in the order `tai_model::validate` takes them.
    pub(crate) const ALL: [Scope; 3] = [Scope::File, Scope::Service, Scope::Method];

    /// The extension that holds this level's policy.
    pub(crate) fn extension_name(self) -> &'static str {
        match self {
            Scope::File => "tai.v1.file",
            Scope::Service => "tai.v1.service",
            Scope::Method => "tai.v1.method",
        }
    }
}

/// A value that could not be read. `field` is the option path below the extension,
/// e.g. `retry.retryable_codes`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReadProblem {
    pub(crate) field: String,
    pub(crate) message: String,
}

/// The three tai extensions, as far as the pool knows them (a pool whose files never
/// import `tai/v1/options.proto` has none, and every policy is empty).
pub(crate) struct Extensions {
    file: Option<ExtensionDescriptor>,
    service: Option<ExtensionDescriptor>,
    method: Option<ExtensionDescriptor>,
}

impl Extensions {
    pub(crate) fn new(pool: &DescriptorPool) -> Self {
        let get = |scope: Scope| pool.get_extension_by_name(scope.extension_name());
        Extensions {
            file: get(Scope::File),
            service: get(Scope::Service),
            method: get(Scope::Method),
        }
    }

    pub(crate) fn get(&self, scope: Scope) -> Option<&ExtensionDescriptor> {
        match scope {
            Scope::File => self.file.as_ref(),
            Scope::Service => self.service.as_ref(),
            Scope::Method => self.method.as_ref(),
        }
    }

    /// Reads the policy of one level from its `options` message.
    pub(crate) fn read(
        &self,
        scope: Scope,
        options: &DynamicMessage,
    ) -> (PolicySpec, Vec<ReadProblem>) {
        let mut problems = Vec::new();
        let spec = match self.get(scope) {
            Some(ext) if options.has_extension(ext) => match &*options.get_extension(ext) {
                Value::Message(policy) => read_policy(policy, &mut problems),
                _ => PolicySpec::default(),
            },
            _ => PolicySpec::default(),
        };
        (spec, problems)
    }
}

/// Reads fields of one message, recording problems under `prefix`.
struct Reader<'a> {
    msg: &'a DynamicMessage,
    prefix: &'static str,
    problems: &'a mut Vec<ReadProblem>,
}

impl Reader<'_> {
    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn problem(&mut self, name: &str, message: String) {
        let field = self.path(name);
        self.problems.push(ReadProblem { field, message });
    }

    fn has(&self, name: &str) -> bool {
        self.msg.has_field_by_name(name)
    }

    fn value(&self, name: &str) -> Option<Value> {
        if self.has(name) {
            self.msg.get_field_by_name(name).map(|v| v.into_owned())
        } else {
            None
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.value(name).and_then(|v| v.as_bool())
    }

    fn u32(&self, name: &str) -> Option<u32> {
        self.value(name).and_then(|v| v.as_u32())
    }

    fn f64(&self, name: &str) -> Option<f64> {
        self.value(name).and_then(|v| v.as_f64())
    }

    fn string(&self, name: &str) -> Option<String> {
        self.value(name).and_then(|v| v.as_str().map(str::to_owned))
    }

    fn message(&self, name: &str) -> Option<DynamicMessage> {
        self.value(name).and_then(|v| v.as_message().cloned())
    }

    fn duration(&mut self, name: &str) -> Option<Duration> {
        let text = self.string(name)?;
        if text.trim() == "none" {
            self.problem(
                name,
                "cannot be \"none\" (only `timeout` can): leave it unset instead".to_owned(),
            );
            return None;
        }
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(message) => {
                self.problem(name, message);
                None
            }
        }
    }

    /// A list of status codes. Unknown names are reported one by one and left out;
    /// repeats are dropped. An empty list is "not set" (proto cannot tell them apart).
    fn codes(&mut self, name: &str) -> Option<Vec<Code>> {
        let list = self.value(name)?;
        let names: Vec<String> = list
            .as_list()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if names.is_empty() {
            return None;
        }
        let mut codes = Vec::new();
        for code_name in names {
            match Code::from_name(&code_name) {
                Some(code) if !codes.contains(&code) => codes.push(code),
                Some(_) => {}
                None => self.problem(
                    name,
                    format!(
                        "unknown status code `{code_name}`; valid codes are: {}",
                        Code::valid_names()
                    ),
                ),
            }
        }
        // Only unknown names: report those, and leave the field unset rather than
        // empty, which would add a second, misleading problem.
        (!codes.is_empty()).then_some(codes)
    }

    /// A balancer name.
    fn balancer(&mut self, name: &str) -> Option<Balancer> {
        let text = self.string(name)?;
        let balancer = Balancer::from_name(&text);
        if balancer.is_none() {
            self.problem(
                name,
                format!(
                    "unknown balancer `{text}`; valid balancers are: {}",
                    Balancer::valid_names()
                ),
            );
        }
        balancer
    }

    /// `disabled: true` turns the sub-policy off; any other field beside it would be
    /// silently ignored, so it is reported.
    fn toggle<T>(&mut self, off_field: &str, read: impl FnOnce(&mut Self) -> T) -> Toggle<T> {
        if self.bool(off_field) == Some(true) {
            let others: Vec<String> = self
                .msg
                .fields()
                .map(|(field, _)| field.name().to_owned())
                .filter(|name| name != off_field)
                .collect();
            if !others.is_empty() {
                self.problem(
                    off_field,
                    format!(
                        "turns {} off here, so {} {} no effect; remove {} or `{off_field}`",
                        self.prefix,
                        others.join(", "),
                        if others.len() == 1 { "has" } else { "have" },
                        if others.len() == 1 { "it" } else { "them" },
                    ),
                );
            }
            Toggle::Off
        } else {
            Toggle::On(read(self))
        }
    }

    /// Runs `read` on the sub-message `name`, if present.
    fn sub<T>(
        &mut self,
        name: &'static str,
        read: impl FnOnce(&mut Reader<'_>) -> Toggle<T>,
    ) -> Option<Toggle<T>> {
        let msg = self.message(name)?;
        let mut reader = Reader {
            msg: &msg,
            prefix: name,
            problems: &mut *self.problems,
        };
        Some(read(&mut reader))
    }
}

/// Reads a `tai.v1.Policy` message.
fn read_policy(msg: &DynamicMessage, problems: &mut Vec<ReadProblem>) -> PolicySpec {
    let mut r = Reader {
        msg,
        prefix: "",
        problems,
    };
    let timeout = r.string("timeout").and_then(|text| {
        if text.trim() == "none" {
            Some(Toggle::Off)
        } else {
            r.duration("timeout").map(Toggle::On)
        }
    });
    PolicySpec {
        idempotent: r.bool("idempotent"),
        timeout,
        max_timeout: r.duration("max_timeout"),
        retry: r.sub("retry", |r| {
            r.toggle("disabled", |r| RetrySpec {
                max_attempts: r.u32("max_attempts"),
                initial_backoff: r.duration("initial_backoff"),
                max_backoff: r.duration("max_backoff"),
                multiplier: r.f64("backoff_multiplier"),
                codes: r.codes("retryable_codes"),
            })
        }),
        hedging: r.sub("hedging", |r| {
            r.toggle("disabled", |r| HedgingSpec {
                max_attempts: r.u32("max_attempts"),
                delay: r.duration("delay"),
                non_fatal_codes: r.codes("non_fatal_codes"),
            })
        }),
        breaker: r.sub("breaker", |r| r.toggle("disabled", read_breaker)),
        throttle: r.sub("throttle", |r| {
            r.toggle("disabled", |r| ThrottleSpec {
                max_tokens: r.u32("max_tokens"),
                token_ratio: r.f64("token_ratio"),
            })
        }),
        balancer: r.balancer("balancer"),
    }
}

fn read_breaker(r: &mut Reader<'_>) -> BreakerSpec {
    let rate = RateRuleSpec {
        threshold: r.f64("failure_rate"),
        window: r.duration("window"),
        min_calls: r.u32("min_calls"),
    };
    let rate = if r.bool("rate_disabled") == Some(true) {
        let set: Vec<&str> = ["failure_rate", "window", "min_calls"]
            .into_iter()
            .filter(|name| r.has(name))
            .collect();
        if !set.is_empty() {
            r.problem(
                "rate_disabled",
                format!(
                    "turns the failure-rate rule off, so {} {} no effect; remove {} or `rate_disabled`",
                    set.join(", "),
                    if set.len() == 1 { "has" } else { "have" },
                    if set.len() == 1 { "it" } else { "them" },
                ),
            );
        }
        Some(Toggle::Off)
    } else if rate != RateRuleSpec::default() {
        Some(Toggle::On(rate))
    } else {
        None
    };
    BreakerSpec {
        failure_threshold: r.u32("failure_threshold"),
        open_timeout: r.duration("open_timeout"),
        max_open_timeout: r.duration("max_open_timeout"),
        half_open_max_calls: r.u32("half_open_max_calls"),
        rate,
        failure_codes: r.codes("failure_codes"),
    }
}
