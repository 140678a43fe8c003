//! Reads the tai options of every service and validates every method with the shared
//! model, collecting every problem with the `.proto` file and line it is about (or,
//! for what the service config wrote, its JSON file and path).
//!
//! A service config adds to the levels what the macro will see: its client-wide part
//! (`retryThrottling`, `tai.balancer`) joins the service level, and the entry that
//! applies to a method joins the method level below the method's own options. The
//! method is validated on exactly the levels the generated attributes carry, and a
//! problem is put on the source that wrote the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost_reflect::{DescriptorPool, FileDescriptor, Kind, MethodDescriptor};
use prost_types::FileDescriptorProto;
use tai_model::{Field, MethodKind, PolicySpec, Problem, json_path, merge, validate};

use crate::Error;
use crate::options::{Extensions, ReadProblem, Scope};

/// `FileDescriptorProto.options`, `ServiceDescriptorProto.options`,
/// `MethodDescriptorProto.options`: where a level's options sit in a source path.
const FILE_OPTIONS: i32 = 8;
const SERVICE_OPTIONS: i32 = 3;
const METHOD_OPTIONS: i32 = 4;

/// The policy levels of one service, as written: what the client codegen emits.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ServicePolicy {
    /// `(tai.v1.file)` of the file that declares the service.
    pub(crate) file: PolicySpec,
    /// `(tai.v1.service)`.
    pub(crate) service: PolicySpec,
    /// `(tai.v1.method)` of each method, in declaration order.
    pub(crate) methods: Vec<PolicySpec>,
}

/// A service config given to the builder, read and checked on its own.
pub(crate) struct JsonConfig {
    /// The file, as the builder was given it.
    pub(crate) path: PathBuf,
    pub(crate) config: tai_model::ServiceConfig,
}

/// `level` with `below` merged under it; `level` itself, as written, when there is
/// nothing below (a merge spells out what a level implies, `hedging = none` beside a
/// retry, which the generated attribute need not repeat).
fn under(below: &PolicySpec, level: &PolicySpec) -> PolicySpec {
    if *below == PolicySpec::default() {
        level.clone()
    } else {
        merge(below, level)
    }
}

/// Whether `level` writes `field` (or, for a problem about a whole sub-policy, turns
/// it on or off).
fn writes(level: &PolicySpec, field: Field) -> bool {
    (field.def().get)(level).is_some()
}

/// One problem, before rendering.
struct Diagnostic {
    path: PathBuf,
    line: Option<u32>,
    scope: Scope,
    /// `""` for the file, `pkg.Svc` for a service, `pkg.Svc/Method` for a method.
    owner: String,
    field: String,
    message: String,
    /// For a problem the validator found at the file or service level: the methods it
    /// was found for, and how many methods that level covers.
    methods: Vec<String>,
    covers: usize,
}

impl Diagnostic {
    fn render(&self) -> String {
        let mut text = self.path.display().to_string();
        if let Some(line) = self.line {
            text.push_str(&format!(":{line}"));
        }
        text.push_str(": ");
        let owner = if !self.methods.is_empty() && self.methods.len() < self.covers {
            // Found for some methods only (a rule that also reads the method level).
            self.methods.join(", ")
        } else {
            self.owner.clone()
        };
        if !owner.is_empty() {
            text.push_str(&owner);
            text.push_str(": ");
        }
        text.push_str(&format!(
            "option ({}).{}: {}",
            self.scope.extension_name(),
            self.field,
            self.message
        ));
        text
    }
}

/// Where each policy field is in the source, to give problems a line.
struct Locator<'a> {
    pool: &'a DescriptorPool,
    extensions: &'a Extensions,
    /// The source text of each file, read on first use.
    texts: HashMap<PathBuf, Option<String>>,
}

impl Locator<'_> {
    /// The 1-based line of `field` (a path such as `retry.max_attempts`) of the level
    /// whose options sit at `options_path`, or of the nearest thing the source info
    /// records: the option statement, else the declaration.
    fn line(
        &mut self,
        file: &FileDescriptorProto,
        display: &Path,
        scope: Scope,
        options_path: Vec<i32>,
        field: &str,
    ) -> Option<u32> {
        let info = file.source_code_info.as_ref()?;
        let ext = self.extensions.get(scope)?;
        let names: Vec<&str> = field.split('.').collect();
        let mut target = options_path;
        target.push(ext.number() as i32);
        let base = target.len();
        target.extend(self.field_numbers(&names));
        let best = info
            .location
            .iter()
            .filter(|l| target.starts_with(&l.path))
            .fold(
                None,
                |best: Option<&prost_types::source_code_info::Location>, l| match best {
                    Some(b) if b.path.len() >= l.path.len() => Some(b),
                    _ => Some(l),
                },
            )?;
        let start = *best.span.first()?;
        // The option was written as one message literal (`option (tai.v1.method) = {
        // retry: { max_attempts: 1 } }`): the source info stops at the statement, so
        // look for the field names inside its text.
        if best.path.len() >= base && best.path.len() < target.len() {
            let rest = &names[(best.path.len() - base).min(names.len())..];
            let text = self
                .texts
                .entry(display.to_owned())
                .or_insert_with(|| std::fs::read_to_string(display).ok());
            if let Some(line) = text
                .as_deref()
                .and_then(|t| find_words(t, &best.span, rest))
            {
                return Some(line);
            }
        }
        u32::try_from(start).ok().map(|l| l + 1)
    }

    /// The field numbers of a path of names below `tai.v1.Policy`, as far as known.
    fn field_numbers(&self, names: &[&str]) -> Vec<i32> {
        let mut numbers = Vec::new();
        let mut message = self.pool.get_message_by_name("tai.v1.Policy");
        for name in names {
            let Some(field) = message.as_ref().and_then(|m| m.get_field_by_name(name)) else {
                break;
            };
            numbers.push(field.number() as i32);
            message = match field.kind() {
                Kind::Message(m) => Some(m),
                _ => None,
            };
        }
        numbers
    }
}

/// Finds `names` one after the other inside the text `span` covers (protobuf source
/// info: `[line, col, end_col]` or `[line, col, end_line, end_col]`, 0-based) and
/// returns the 1-based line of the last one. Comments are skipped; names match whole
/// words only.
fn find_words(text: &str, span: &[i32], names: &[&str]) -> Option<u32> {
    let (start_line, start_col, end_line, end_col) = match *span {
        [l, c, ec] => (l, c, l, ec),
        [l, c, el, ec] => (l, c, el, ec),
        _ => return None,
    };
    let lines: Vec<&str> = text.lines().collect();
    let (mut line, mut col) = (
        usize::try_from(start_line).ok()?,
        usize::try_from(start_col).ok()?,
    );
    let end_line = usize::try_from(end_line)
        .ok()?
        .min(lines.len().checked_sub(1)?);
    let end_col = usize::try_from(end_col).ok()?;
    let mut found = None;
    'names: for name in names {
        while line <= end_line {
            let chars: Vec<char> = lines[line].chars().collect();
            let stop = if line == end_line {
                end_col.min(chars.len())
            } else {
                chars.len()
            };
            let comment = (0..chars.len().saturating_sub(1))
                .find(|&i| chars[i] == '/' && chars[i + 1] == '/')
                .unwrap_or(chars.len());
            let stop = stop.min(comment);
            let word: Vec<char> = name.chars().collect();
            let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
            let mut i = col;
            while i + word.len() <= stop {
                let before = i.checked_sub(1).map(|j| chars[j]);
                let after = chars.get(i + word.len()).copied();
                if chars[i..i + word.len()] == word[..]
                    && !before.is_some_and(is_ident)
                    && !after.is_some_and(is_ident)
                {
                    found = Some(line);
                    col = i + word.len();
                    continue 'names;
                }
                i += 1;
            }
            line += 1;
            col = 0;
        }
        return None;
    }
    found.and_then(|l| u32::try_from(l + 1).ok())
}

/// Reads and validates the tai options of `files`. `display` gives the path to show
/// for a file name. Returns the levels of every service, keyed by full name, or one
/// error listing every problem.
pub(crate) fn check(
    pool: &DescriptorPool,
    files: &[FileDescriptor],
    json: Option<&JsonConfig>,
    display: &dyn Fn(&str) -> PathBuf,
) -> Result<HashMap<String, ServicePolicy>, Error> {
    let extensions = Extensions::new(pool);
    let mut locator = Locator {
        pool,
        extensions: &extensions,
        texts: HashMap::new(),
    };
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    // Problems in what the service config wrote: `file: path: method: message`.
    let mut json_problems: Vec<String> = Vec::new();
    let mut policies = HashMap::new();
    let client_json = json.map(|j| j.config.client.clone()).unwrap_or_default();

    for file in files {
        let path = display(file.name());
        let proto = file.file_descriptor_proto();
        let file_methods: usize = file.services().map(|s| s.methods().len()).sum();
        let mut report = |locator: &mut Locator<'_>,
                          scope: Scope,
                          options_path: &[i32],
                          owner: &str,
                          problem: ReadProblem,
                          method: Option<(&str, usize)>| {
            let line = locator.line(proto, &path, scope, options_path.to_vec(), &problem.field);
            if let Some(existing) = diagnostics.iter_mut().find(|d| {
                d.scope == scope
                    && d.owner == owner
                    && d.field == problem.field
                    && d.message == problem.message
                    && d.path == path
            }) {
                if let Some((method, _)) = method
                    && !existing.methods.iter().any(|m| m == method)
                {
                    existing.methods.push(method.to_owned());
                }
                return;
            }
            diagnostics.push(Diagnostic {
                path: path.clone(),
                line,
                scope,
                owner: owner.to_owned(),
                field: problem.field,
                message: problem.message,
                methods: method.map(|(m, _)| vec![m.to_owned()]).unwrap_or_default(),
                covers: method.map_or(0, |(_, covers)| covers),
            });
        };

        let file_path = vec![FILE_OPTIONS];
        let (file_spec, problems) = extensions.read(Scope::File, &file.options());
        for problem in problems {
            report(&mut locator, Scope::File, &file_path, "", problem, None);
        }

        for service in file.services() {
            let service_name = service.full_name().to_owned();
            let service_path = [service.path(), &[SERVICE_OPTIONS]].concat();
            let (service_spec, problems) = extensions.read(Scope::Service, &service.options());
            for problem in problems {
                report(
                    &mut locator,
                    Scope::Service,
                    &service_path,
                    &service_name,
                    problem,
                    None,
                );
            }
            let mut methods = Vec::new();
            for method in service.methods() {
                let method_name = format!("{service_name}/{}", method.name());
                let method_path = [method.path(), &[METHOD_OPTIONS]].concat();
                let (method_spec, problems) = extensions.read(Scope::Method, &method.options());
                for problem in problems {
                    report(
                        &mut locator,
                        Scope::Method,
                        &method_path,
                        &method_name,
                        problem,
                        None,
                    );
                }
                let kind = kind_of(&method);
                let entry = json.and_then(|j| {
                    j.config
                        .level_for(&service_name, method.name(), kind)
                        .map(|(entry, level)| (entry.path(), level))
                });
                let entry_spec = entry.as_ref().map(|(_, l)| l.clone()).unwrap_or_default();
                // The levels as the generated attributes carry them.
                let service_level = under(&client_json, &service_spec);
                let method_level = under(&entry_spec, &method_spec);
                let levels = [&file_spec, &service_level, &method_level];
                if let Err(problems) = validate(&levels, kind, Some(2)) {
                    for problem in problems {
                        // What the JSON wrote and the proto did not is the JSON's.
                        let from_json = match problem.level {
                            1 => {
                                writes(&client_json, problem.field)
                                    && !writes(&service_spec, problem.field)
                            }
                            2 => entry.is_some() && !writes(&method_spec, problem.field),
                            _ => false,
                        };
                        if let (true, Some(j)) = (from_json, json) {
                            let at = match (&entry, problem.level) {
                                (Some((path, _)), 2) => {
                                    format!("{path}.{}", json_path(problem.field))
                                }
                                _ => json_path(problem.field),
                            };
                            let text = json_problem(&j.path, &at, &method_name, &problem);
                            if !json_problems.contains(&text) {
                                json_problems.push(text);
                            }
                            continue;
                        }
                        let scope = Scope::ALL[problem.level.min(2)];
                        let (options_path, owner, covers) = match scope {
                            Scope::File => (&file_path, "", file_methods),
                            Scope::Service => (
                                &service_path,
                                service_name.as_str(),
                                service.methods().len(),
                            ),
                            Scope::Method => (&method_path, method_name.as_str(), 1),
                        };
                        let read = ReadProblem {
                            field: problem.field.proto_path().to_owned(),
                            message: problem.kind.to_string(),
                        };
                        let method = Some((method_name.as_str(), covers));
                        report(&mut locator, scope, options_path, owner, read, method);
                    }
                }
                methods.push(method_level);
            }
            policies.insert(
                service_name,
                ServicePolicy {
                    file: file_spec.clone(),
                    service: under(&client_json, &service_spec),
                    methods,
                },
            );
        }
    }

    if diagnostics.is_empty() && json_problems.is_empty() {
        return Ok(policies);
    }
    // Reading order: by file, then line. The sort is stable, so problems on one line
    // keep the order they were found in (outer levels first). The service config's
    // come after, in the order of the methods they were found for.
    diagnostics.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
    Err(Error::policy(
        diagnostics
            .iter()
            .map(Diagnostic::render)
            .chain(json_problems)
            .collect(),
    ))
}

/// A problem in what the service config wrote, for one method:
/// `svc.json: methodConfig[0].retryPolicy.maxAttempts: demo.S/Get: is 1, ...`.
fn json_problem(file: &Path, at: &str, method: &str, problem: &Problem) -> String {
    format!("{}: {at}: {method}: {}", file.display(), problem.kind)
}

/// The shape of a method.
pub(crate) fn kind_of(method: &MethodDescriptor) -> MethodKind {
    match (method.is_client_streaming(), method.is_server_streaming()) {
        (false, false) => MethodKind::Unary,
        (false, true) => MethodKind::ServerStreaming,
        (true, false) => MethodKind::ClientStreaming,
        (true, true) => MethodKind::Bidi,
    }
}

#[cfg(test)]
mod tests {
    use super::find_words;

    #[test]
    fn finds_nested_field_lines() {
        let text = "a\n  option (x) = {\n    hedging: { max_attempts: 2 }\n    // retry: here\n    retry: {\n      max_attempts: 1\n    }\n  };\n";
        let span = [1, 2, 7, 4];
        assert_eq!(find_words(text, &span, &["retry", "max_attempts"]), Some(6));
        assert_eq!(
            find_words(text, &span, &["hedging", "max_attempts"]),
            Some(3)
        );
        assert_eq!(find_words(text, &span, &["breaker"]), None);
        // Whole words only: `max_attempts` is not `attempts`.
        assert_eq!(find_words(text, &span, &["attempts"]), None);
    }
}
