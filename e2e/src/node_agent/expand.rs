//! `$(VAR)` references in `command`, `args` and `env` values, with Kubernetes' rules:
//!
//! - `$(NAME)` becomes the value of `NAME` when it is defined, and stays `$(NAME)` when not;
//! - `$$` is an escaped `$` (so `$$(NAME)` is the literal `$(NAME)`);
//! - a `$` before anything else, a trailing `$`, and an unclosed `$(` are kept as written.

/// Expand `$(NAME)` references in `input` with `lookup`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('(') {
            match reference.find(')') {
                Some(close) => {
                    let name = &reference[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &reference[close + 1..];
                }
                None => {
                    // No closing parenthesis: everything from here on is literal.
                    out.push_str("$(");
                    rest = reference;
                }
            }
        } else {
            // A `$` that starts no reference (or ends the string) is kept.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([
            ("POD_IP", "127.20.1.2"),
            ("EMPTY", ""),
            ("NESTED", "$(POD_IP)"),
        ])
    }

    fn run(input: &str) -> String {
        let env = env();
        expand(input, |name| env.get(name).copied())
    }

    #[test]
    fn defined_references_are_replaced() {
        assert_eq!(run("--host $(POD_IP)"), "--host 127.20.1.2");
        assert_eq!(run("$(POD_IP):8080"), "127.20.1.2:8080");
        assert_eq!(run("a$(EMPTY)b"), "ab");
        assert_eq!(run("$(POD_IP)$(POD_IP)"), "127.20.1.2127.20.1.2");
    }

    #[test]
    fn values_are_not_expanded_again() {
        assert_eq!(run("$(NESTED)"), "$(POD_IP)");
    }

    #[test]
    fn undefined_references_stay_as_written() {
        assert_eq!(run("$(NOPE)"), "$(NOPE)");
        assert_eq!(run("x $(NOPE) $(POD_IP)"), "x $(NOPE) 127.20.1.2");
    }

    #[test]
    fn escapes_and_stray_operators() {
        assert_eq!(run("$$(POD_IP)"), "$(POD_IP)");
        assert_eq!(run("$$$(POD_IP)"), "$127.20.1.2");
        assert_eq!(run("cost: $5"), "cost: $5");
        assert_eq!(run("trailing $"), "trailing $");
        assert_eq!(run("$$"), "$");
        assert_eq!(run("$(POD_IP"), "$(POD_IP");
        assert_eq!(run("$()"), "$()");
        assert_eq!(run("ünï$(POD_IP)cödé"), "ünï127.20.1.2cödé");
    }
}
