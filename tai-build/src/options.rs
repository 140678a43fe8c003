//! Reading `(tai.v1.file)`, `(tai.v1.service)` and `(tai.v1.method)` into the shared
//! model's [`PolicySpec`].
//!
//! The options are read with prost-reflect from the descriptor pool protox built,
//! because that pool keeps extension options (`prost_types` descriptors drop them).
//! This is only the proto front end: it turns fields into values and reports values
//! it cannot read (a bad duration, an unknown code). Every rule about what a policy
//! may say lives in `tai_model::validate`. Which fields exist, and what they are
//! called in the proto, comes from the grammar table (`tai_model::FIELDS`).

use std::time::Duration;

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, Value as ProtoValue};
use tai_model::{Balancer, Code, Field, FieldDef, PolicySpec, Value, ValueKind, parse_duration};

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
                ProtoValue::Message(policy) => read_policy(policy, &mut problems),
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

    fn value(&self, name: &str) -> Option<ProtoValue> {
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

    /// A list of scope or role names, kept as written (the model checks each one).
    /// An empty list is "not set", as for codes.
    fn names(&self, name: &str) -> Option<Vec<String>> {
        let list = self.value(name)?;
        let names: Vec<String> = list
            .as_list()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        (!names.is_empty()).then_some(names)
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

    /// The names of the fields this message sets, but `except`.
    fn set_fields_except(&self, except: &str) -> Vec<String> {
        self.msg
            .fields()
            .map(|(field, _)| field.name().to_owned())
            .filter(|name| name != except)
            .collect()
    }

    /// Reports that `off_field` turns `what` off, so the `others` set beside it do nothing.
    fn no_effect(&mut self, off_field: &str, what: &str, others: &[String]) {
        if others.is_empty() {
            return;
        }
        let one = others.len() == 1;
        self.problem(
            off_field,
            format!(
                "turns {what} off{}, so {} {} no effect; remove {} or `{off_field}`",
                if what == self.prefix { " here" } else { "" },
                others.join(", "),
                if one { "has" } else { "have" },
                if one { "it" } else { "them" },
            ),
        );
    }

    /// Reads the rows of the grammar table under `parent` from this message into `spec`.
    fn read_fields(&mut self, parent: Option<Field>, spec: &mut PolicySpec) {
        // A rule turned off (`rate_disabled`) is applied after its siblings were read,
        // so that those it silences can be named.
        let mut rules_off = Vec::new();
        for def in Field::children(parent) {
            let name = def.proto;
            let value = match def.kind {
                ValueKind::Flag => self.bool(name).map(Value::Flag),
                ValueKind::Duration => self.duration(name).map(Value::Duration),
                ValueKind::DurationOrNone => self.string(name).and_then(|text| {
                    if text.trim() == "none" {
                        Some(Value::Off)
                    } else {
                        self.duration(name).map(Value::Duration)
                    }
                }),
                ValueKind::Count => self.u32(name).map(Value::Count),
                ValueKind::Number => self.f64(name).map(Value::Number),
                ValueKind::Codes => self.codes(name).map(Value::Codes),
                ValueKind::Balancer => self.balancer(name).map(Value::Balancer),
                ValueKind::Names => self.names(name).map(Value::Names),
                ValueKind::Rule { proto_off, .. } => {
                    if self.bool(proto_off) == Some(true) {
                        rules_off.push(def);
                    }
                    self.f64(name).map(Value::Number)
                }
                ValueKind::Policy { .. } => {
                    self.policy(def, spec);
                    None
                }
            };
            if let Some(value) = value {
                (def.set)(spec, value);
            }
        }
        for def in rules_off {
            let ValueKind::Rule { rule, proto_off } = def.kind else {
                continue;
            };
            (def.set)(spec, Value::Off);
            let silenced: Vec<String> = Field::children(parent)
                .filter(|d| d.field == def.field || (d.get)(spec).is_none())
                .filter(|d| self.has(d.proto))
                .map(|d| d.proto.to_owned())
                .collect();
            self.no_effect(proto_off, rule, &silenced);
        }
    }

    /// Reads the sub-policy message of `def`, if present: `disabled: true` turns it
    /// off (and any other field beside it is reported, as it would be ignored).
    fn policy(&mut self, def: &FieldDef, spec: &mut PolicySpec) {
        let Some(msg) = self.message(def.proto) else {
            return;
        };
        let mut reader = Reader {
            msg: &msg,
            prefix: def.proto,
            problems: &mut *self.problems,
        };
        if reader.bool(DISABLED) == Some(true) {
            let others = reader.set_fields_except(DISABLED);
            reader.no_effect(DISABLED, def.proto, &others);
            (def.set)(spec, Value::Off);
        } else {
            (def.set)(spec, Value::On);
            reader.read_fields(Some(def.field), spec);
        }
    }
}

/// The field of every sub-policy message that turns it off (`retry: { disabled: true }`).
const DISABLED: &str = "disabled";

/// Reads a `tai.v1.Policy` message, field by field as the grammar table lists them.
fn read_policy(msg: &DynamicMessage, problems: &mut Vec<ReadProblem>) -> PolicySpec {
    let mut spec = PolicySpec::default();
    Reader {
        msg,
        prefix: "",
        problems,
    }
    .read_fields(None, &mut spec);
    spec
}
