//! `$(VAR)` references in a container's `command`, `args` and `env` values, expanded as
//! the kubelet does (`third_party/forked/golang/expansion` and
//! `ExpandContainerCommandAndArgs` in Kubernetes).
//!
//! `$(NAME)` becomes the variable's value, or stays as written when the variable is not
//! defined; `$$` is an escaped `$`; a `$` before anything else is kept as is.
//! [`container_env`] knows only the variables with a literal `value`; the kubelet
//! expands with the whole environment it computed (`valueFrom`, `envFrom` included).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Container;

const OPERATOR: u8 = b'$';
const OPENER: u8 = b'(';
const CLOSER: u8 = b')';

/// The container's environment as the kubelet computes it before expanding `command`
/// and `args`: each `env` value is expanded against the variables defined before it.
pub(crate) fn container_env(container: &Container) -> HashMap<String, String> {
    let mut env = HashMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, &env),
            (_, Some(_)) => continue,
            _ => String::new(),
        };
        env.insert(var.name.clone(), value);
    }
    env
}

/// Expands every `$(VAR)` reference of `input` from `env`.
///
/// Works on bytes like the Go original: a `$` followed by a non-ASCII character keeps
/// Go's output up to invalid UTF-8, which is replaced by U+FFFD.
pub(crate) fn expand(input: &str, env: &HashMap<String, String>) -> String {
    let input = input.as_bytes();
    let mut out = Vec::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < input.len() {
        if input[cursor] == OPERATOR && cursor + 1 < input.len() {
            out.extend_from_slice(&input[checkpoint..cursor]);
            let (read, advance) = read_variable(&input[cursor + 1..], env);
            out.extend_from_slice(&read);
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&input[checkpoint..]);
    String::from_utf8_lossy(&out).into_owned()
}

/// What a `$` followed by `input` expands to, and how many bytes of `input` it consumed.
fn read_variable(input: &[u8], env: &HashMap<String, String>) -> (Vec<u8>, usize) {
    match input[0] {
        OPERATOR => (vec![OPERATOR], 1),
        OPENER => match input.iter().position(|&b| b == CLOSER) {
            Some(close) => {
                let name = String::from_utf8_lossy(&input[1..close]);
                let value = match env.get(name.as_ref()) {
                    Some(value) => value.clone().into_bytes(),
                    None => format!("$({name})").into_bytes(),
                };
                (value, close + 1)
            }
            None => (vec![OPERATOR, OPENER], 1),
        },
        other => {
            // Go's `string(input[0])` turns the byte into the code point of that value.
            let mut read = vec![OPERATOR];
            read.extend_from_slice(char::from(other).encode_utf8(&mut [0; 4]).as_bytes());
            (read, 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource};

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let vars = env(&[
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("EMPTY", ""),
            ("A)B", "odd"),
        ]);
        assert_eq!(expand(input, &vars), expected, "expanding {input:?}");
    }

    // The cases of Kubernetes' expand_test.go that involve one context.
    #[test]
    fn references() {
        check("$(VAR_A)", "A");
        check("___$(VAR_B)___", "___B___");
        check("$(VAR_A)-$(VAR_A)", "A-A");
        check("$(VAR_A)$(VAR_B)", "AB");
        check("$(EMPTY)", "");
        check("x$(EMPTY)y", "xy");
        check("$(UNDEFINED)", "$(UNDEFINED)");
        check("$()", "$()");
        check("$(VAR_A", "$(VAR_A");
        check("$(VAR_A)B)", "AB)");
        check("$((VAR_A))", "$((VAR_A))");
    }

    #[test]
    fn escapes_and_lone_operators() {
        check("$$(VAR_A)", "$(VAR_A)");
        check("$$$(VAR_A)", "$A");
        check("$$$$(VAR_A)", "$$(VAR_A)");
        check("$$", "$");
        check("$$$", "$$");
        check("$", "$");
        check("a$", "a$");
        check("$VAR_A", "$VAR_A");
        check("${VAR_A}", "${VAR_A}");
        check("$)", "$)");
        check("$(", "$(");
        check("$$(", "$(");
        check("f00$(VAR_A", "f00$(VAR_A");
        check("$(VAR_A)$", "A$");
    }

    #[test]
    fn names_are_taken_up_to_the_first_closer() {
        check("$(A)B)", "$(A)B)");
        check("$(VAR_A$(VAR_B))", "$(VAR_A$(VAR_B))");
    }

    #[test]
    fn non_ascii_after_operator_follows_go_bytes() {
        // "é" is 0xC3 0xA9: Go emits "$" + U+00C3 and then the stray 0xA9 byte.
        check("$é", "$Ã\u{FFFD}");
        check("é$(VAR_A)é", "éAé");
    }

    #[test]
    fn env_values_see_only_earlier_variables() {
        let container = Container {
            name: "c".into(),
            env: Some(vec![
                EnvVar {
                    name: "LATER_REF".into(),
                    value: Some("$(FIRST)".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "FIRST".into(),
                    value: Some("one".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "SECOND".into(),
                    value: Some("$(FIRST)-two-$$(FIRST)".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "UNSET".into(),
                    value: None,
                    ..Default::default()
                },
                EnvVar {
                    name: "FROM_FIELD".into(),
                    value_from: Some(EnvVarSource::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let vars = container_env(&container);
        assert_eq!(vars["LATER_REF"], "$(FIRST)");
        assert_eq!(vars["SECOND"], "one-two-$(FIRST)");
        assert_eq!(vars["UNSET"], "");
        assert!(!vars.contains_key("FROM_FIELD"));
    }
}
