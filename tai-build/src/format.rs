//! Layout of the `#[resilient(...)]` attributes in the formatted output.
//!
//! prettyplease formats attribute arguments as a plain token stream and breaks them
//! wherever a line gets long, including inside a code list. tai's attributes read
//! best one key per line, each sub-policy whole on its line, so after prettyplease
//! they are laid out again here: on one line if that fits in 100 columns, else one
//! top-level argument per line. Only tai's own attributes are touched; their
//! strings hold names and durations, never brackets or quotes.

/// The widest line an attribute is kept on.
const WIDTH: usize = 100;

/// Lays out every `#[resilient(...)]` and `#[::tai_runtime::resilient(...)]` in `text`.
pub(crate) fn relayout_attributes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[resilient(") || trimmed.starts_with("#[::tai_runtime::resilient(")
        {
            let indent = &line[..line.len() - trimmed.len()];
            let mut attribute = trimmed.to_owned();
            while !closed(&attribute) {
                let Some(next) = lines.next() else { break };
                attribute.push(' ');
                attribute.push_str(next.trim());
            }
            out.push_str(&layout(indent, &attribute));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whether every `(` and `[` (outside strings) is closed.
fn closed(text: &str) -> bool {
    let mut depth = 0i32;
    let mut in_string = false;
    for c in text.chars() {
        match c {
            '"' => in_string = !in_string,
            '(' | '[' if !in_string => depth += 1,
            ')' | ']' if !in_string => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// Collapses whitespace outside strings, and drops it inside brackets and before commas.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    for c in text.chars() {
        if c == '"' {
            in_string = !in_string;
        }
        if in_string || c == '"' {
            out.push(c);
            continue;
        }
        if c.is_whitespace() {
            if !out.ends_with([' ', '(', '[']) {
                out.push(' ');
            }
            continue;
        }
        if matches!(c, ')' | ']' | ',') && out.ends_with(' ') {
            out.pop();
        }
        if matches!(c, ')' | ']') && out.ends_with(',') {
            out.pop();
        }
        out.push(c);
    }
    out
}

/// `indent` + the attribute, on one line or one argument per line.
fn layout(indent: &str, attribute: &str) -> String {
    let attribute = normalize(attribute);
    let (Some(open), Some(body)) = (attribute.find('('), attribute.strip_suffix(")]")) else {
        return format!("{indent}{attribute}");
    };
    let head = &attribute[..open];
    let body = &body[open + 1..];
    let mut args = Vec::new();
    let (mut depth, mut in_string, mut start) = (0i32, false, 0);
    for (i, c) in body.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '(' | '[' if !in_string => depth += 1,
            ')' | ']' if !in_string => depth -= 1,
            ',' if !in_string && depth == 0 => {
                args.push(body[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    args.push(body[start..].trim());
    args.retain(|a| !a.is_empty());
    let one_line = format!("{indent}{head}({})]", args.join(", "));
    if one_line.len() <= WIDTH {
        return one_line;
    }
    let mut text = format!("{indent}{head}(\n");
    for (i, arg) in args.iter().enumerate() {
        let comma = if i + 1 < args.len() { "," } else { "" };
        text.push_str(&format!("{indent}    {arg}{comma}\n"));
    }
    text.push_str(&format!("{indent})]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_splits_attributes() {
        let input = "    #[resilient(\n        name = \"Audit\",\n        breaker(\n            failure_rate = 0.25,\n            failure_codes = [INTERNAL,\n            UNKNOWN]\n        )\n    )]\n    fn audit();\n";
        assert_eq!(
            relayout_attributes(input),
            "    #[resilient(name = \"Audit\", breaker(failure_rate = 0.25, failure_codes = [INTERNAL, UNKNOWN]))]\n    fn audit();\n"
        );
        let long = format!(
            "#[::tai_runtime::resilient(service = \"a.B\", {})]\n",
            "timeout = \"2s\", ".repeat(8)
        );
        let out = relayout_attributes(&long);
        assert!(
            out.starts_with(
                "#[::tai_runtime::resilient(\n    service = \"a.B\",\n    timeout = \"2s\",\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("    timeout = \"2s\"\n)]\n"), "{out}");
    }

    #[test]
    fn leaves_other_lines_alone() {
        let input = "#[derive(Clone,\n  Debug)]\nstruct A;\n";
        assert_eq!(relayout_attributes(input), input);
    }
}
