//! Resolution of each method's policy against the shared model.
//!
//! The trait's attribute is the outer level and a method's attribute the inner one;
//! `tai_model::validate` combines them and checks every rule. This file only maps
//! the model's problems back to tokens: a problem in a method's own level is shown
//! where the method wrote it, one in the trait's level once, naming the methods it
//! concerns unless it concerns all of them.

use syn::Ident;
use tai_model::{MethodKind, PolicySpec, Problem, ResolvedPolicy, resolve, validate};

use crate::attr::Level;
use crate::ctxt::Ctxt;
use crate::shape::Method;

/// Validates every method against the service level and returns each one's resolved
/// policy. Problems become errors at the token that caused them; a problem in the
/// service level is reported once, naming the methods it concerns unless it
/// concerns all of them. A method with problems gets its policy as written, so
/// that the expansion can still be made.
pub(crate) fn resolve_all(
    service: &Level,
    methods: &[Method],
    ctxt: &mut Ctxt,
) -> Vec<ResolvedPolicy> {
    // Problems of the service level, in order of discovery, with the methods they concern.
    let mut inherited: Vec<(Problem, Vec<&Ident>)> = Vec::new();
    let mut policies = Vec::with_capacity(methods.len());
    for method in methods {
        let levels: [&PolicySpec; 2] = [&service.spec, &method.level.spec];
        match validate(&levels, method.shape.kind, Some(1)) {
            Ok(policy) => policies.push(policy),
            Err(problems) => {
                for problem in problems {
                    if problem.level == 1 {
                        ctxt.error(method.level.error(&problem));
                    } else if let Some((_, concerned)) =
                        inherited.iter_mut().find(|(p, _)| *p == problem)
                    {
                        concerned.push(&method.ident);
                    } else {
                        inherited.push((problem, vec![&method.ident]));
                    }
                }
                let mut policy = resolve(&levels);
                if method.shape.kind.streams_requests() {
                    policy.retry = None;
                    policy.hedging = None;
                }
                policies.push(policy);
            }
        }
    }
    if methods.is_empty() {
        // Nothing inherits the service level, but it must still be valid.
        if let Err(problems) = validate(&[&service.spec], MethodKind::Unary, None) {
            inherited.extend(problems.into_iter().map(|p| (p, Vec::new())));
        }
    }
    for (problem, concerned) in inherited {
        let mut error = service.error(&problem);
        if !concerned.is_empty() && concerned.len() < methods.len() {
            let names: Vec<String> = concerned.iter().map(|i| format!("`{i}`")).collect();
            error = syn::Error::new(
                error.span(),
                format!("{error} (inherited by {})", names.join(", ")),
            );
        }
        ctxt.error(error);
    }
    policies
}
