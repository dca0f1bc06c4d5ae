//! How the apiserver describes a request body it cannot read, word for word: the
//! syntax errors of Go's `encoding/json` (which the apiserver's JSON decoder reports),
//! the errors of the YAML parser behind `sigs.k8s.io/yaml`, and the short summary of
//! the body the apiserver appends to an unrecognized object.
//!
//! Only texts: the caller decodes the body and builds the `Status`.

/// Go's `encoding/json` refuses to nest deeper than this.
const MAX_NESTING: usize = 10_000;

/// The first syntax error in `data` as Go's `encoding/json` words it
/// (`invalid character '}' looking for beginning of value`, `unexpected end of JSON
/// input`), or `None` when `data` is one well-formed JSON value.
pub fn json_syntax_error(data: &[u8]) -> Option<String> {
    let mut scanner = Scanner::default();
    for &c in data {
        if let Err(message) = scanner.step(c) {
            return Some(message);
        }
    }
    scanner.eof().err()
}

/// Where a scanner is inside a composite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    ObjectKey,
    ObjectValue,
    ArrayValue,
}

/// What the scanner expects next; mirrors the step functions of Go's scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    #[default]
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    EndTop,
    InString,
    InStringEsc,
    InStringEscU(u8),
    Neg,
    One,
    Zero,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// Inside `true`, `false` or `null`: the literal and how many bytes were seen.
    Literal(&'static str, usize),
}

#[derive(Debug, Default)]
struct Scanner {
    state: State,
    stack: Vec<Parse>,
    end_top: bool,
}

type Step = Result<(), String>;

impl Scanner {
    fn error(c: u8, context: &str) -> Step {
        Err(format!("invalid character {} {context}", quote_char(c)))
    }

    fn push(&mut self, p: Parse) -> Step {
        self.stack.push(p);
        if self.stack.len() > MAX_NESTING {
            return Err("exceeded max depth".to_string());
        }
        Ok(())
    }

    fn pop(&mut self) {
        self.stack.pop();
        if self.stack.is_empty() {
            self.state = State::EndTop;
            self.end_top = true;
        } else {
            self.state = State::EndValue;
        }
    }

    fn eof(&mut self) -> Step {
        if self.end_top {
            return Ok(());
        }
        // A number at the very end is only complete once something follows it.
        self.step(b' ')?;
        if self.end_top {
            return Ok(());
        }
        Err("unexpected end of JSON input".to_string())
    }

    fn step(&mut self, c: u8) -> Step {
        match self.state {
            State::BeginValue => self.begin_value(c),
            State::BeginValueOrEmpty => {
                if is_space(c) {
                    Ok(())
                } else if c == b']' {
                    self.end_value(c)
                } else {
                    self.begin_value(c)
                }
            }
            State::BeginStringOrEmpty => {
                if is_space(c) {
                    Ok(())
                } else if c == b'}' {
                    if let Some(top) = self.stack.last_mut() {
                        *top = Parse::ObjectValue;
                    }
                    self.end_value(c)
                } else {
                    self.begin_string(c)
                }
            }
            State::BeginString => self.begin_string(c),
            State::EndValue => self.end_value(c),
            State::EndTop => {
                if is_space(c) {
                    Ok(())
                } else {
                    Self::error(c, "after top-level value")
                }
            }
            State::InString => {
                match c {
                    b'"' => self.state = State::EndValue,
                    b'\\' => self.state = State::InStringEsc,
                    c if c < 0x20 => return Self::error(c, "in string literal"),
                    _ => {}
                }
                Ok(())
            }
            State::InStringEsc => match c {
                b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => {
                    self.state = State::InString;
                    Ok(())
                }
                b'u' => {
                    self.state = State::InStringEscU(0);
                    Ok(())
                }
                _ => Self::error(c, "in string escape code"),
            },
            State::InStringEscU(seen) => {
                if !c.is_ascii_hexdigit() {
                    return Self::error(c, "in \\u hexadecimal character escape");
                }
                self.state = if seen == 3 {
                    State::InString
                } else {
                    State::InStringEscU(seen + 1)
                };
                Ok(())
            }
            State::Neg => match c {
                b'0' => {
                    self.state = State::Zero;
                    Ok(())
                }
                b'1'..=b'9' => {
                    self.state = State::One;
                    Ok(())
                }
                _ => Self::error(c, "in numeric literal"),
            },
            State::One => {
                if c.is_ascii_digit() {
                    Ok(())
                } else {
                    self.zero(c)
                }
            }
            State::Zero => self.zero(c),
            State::Dot => {
                if c.is_ascii_digit() {
                    self.state = State::Dot0;
                    Ok(())
                } else {
                    Self::error(c, "after decimal point in numeric literal")
                }
            }
            State::Dot0 => match c {
                b'0'..=b'9' => Ok(()),
                b'e' | b'E' => {
                    self.state = State::E;
                    Ok(())
                }
                _ => self.end_value(c),
            },
            State::E => {
                if c == b'+' || c == b'-' {
                    self.state = State::ESign;
                    Ok(())
                } else {
                    self.e_sign(c)
                }
            }
            State::ESign => self.e_sign(c),
            State::E0 => {
                if c.is_ascii_digit() {
                    Ok(())
                } else {
                    self.end_value(c)
                }
            }
            State::Literal(word, seen) => {
                let want = word.as_bytes()[seen];
                if c != want {
                    return Self::error(
                        c,
                        &format!("in literal {word} (expecting {})", quote_char(want)),
                    );
                }
                self.state = if seen + 1 == word.len() {
                    State::EndValue
                } else {
                    State::Literal(word, seen + 1)
                };
                Ok(())
            }
        }
    }

    fn begin_value(&mut self, c: u8) -> Step {
        self.state = match c {
            c if is_space(c) => return Ok(()),
            b'{' => {
                self.push(Parse::ObjectKey)?;
                State::BeginStringOrEmpty
            }
            b'[' => {
                self.push(Parse::ArrayValue)?;
                State::BeginValueOrEmpty
            }
            b'"' => State::InString,
            b'-' => State::Neg,
            b'0' => State::Zero,
            b'1'..=b'9' => State::One,
            b't' => State::Literal("true", 1),
            b'f' => State::Literal("false", 1),
            b'n' => State::Literal("null", 1),
            _ => return Self::error(c, "looking for beginning of value"),
        };
        Ok(())
    }

    fn begin_string(&mut self, c: u8) -> Step {
        if is_space(c) {
            return Ok(());
        }
        if c == b'"' {
            self.state = State::InString;
            return Ok(());
        }
        Self::error(c, "looking for beginning of object key string")
    }

    fn zero(&mut self, c: u8) -> Step {
        match c {
            b'.' => {
                self.state = State::Dot;
                Ok(())
            }
            b'e' | b'E' => {
                self.state = State::E;
                Ok(())
            }
            _ => self.end_value(c),
        }
    }

    fn e_sign(&mut self, c: u8) -> Step {
        if c.is_ascii_digit() {
            self.state = State::E0;
            Ok(())
        } else {
            Self::error(c, "in exponent of numeric literal")
        }
    }

    fn end_value(&mut self, c: u8) -> Step {
        let Some(&top) = self.stack.last() else {
            self.state = State::EndTop;
            self.end_top = true;
            return self.step(c);
        };
        if is_space(c) {
            self.state = State::EndValue;
            return Ok(());
        }
        match (top, c) {
            (Parse::ObjectKey, b':') => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Parse::ObjectValue;
                }
                self.state = State::BeginValue;
                Ok(())
            }
            (Parse::ObjectKey, _) => Self::error(c, "after object key"),
            (Parse::ObjectValue, b',') => {
                if let Some(top) = self.stack.last_mut() {
                    *top = Parse::ObjectKey;
                }
                self.state = State::BeginString;
                Ok(())
            }
            (Parse::ObjectValue, b'}') | (Parse::ArrayValue, b']') => {
                self.pop();
                Ok(())
            }
            (Parse::ObjectValue, _) => Self::error(c, "after object key:value pair"),
            (Parse::ArrayValue, b',') => {
                self.state = State::BeginValue;
                Ok(())
            }
            (Parse::ArrayValue, _) => Self::error(c, "after array element"),
        }
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// A byte quoted as Go's JSON scanner quotes it in its messages: `'x'`, `'\n'`,
/// `'\x00'`, `'"'`, `'\''`; a byte above 0x7f stands for the rune of that number.
fn quote_char(c: u8) -> String {
    let inner = match c {
        b'\'' => "\\'".to_string(),
        b'"' => "\"".to_string(),
        0x07 => "\\a".to_string(),
        0x08 => "\\b".to_string(),
        0x0c => "\\f".to_string(),
        b'\n' => "\\n".to_string(),
        b'\r' => "\\r".to_string(),
        b'\t' => "\\t".to_string(),
        0x0b => "\\v".to_string(),
        b'\\' => "\\\\".to_string(),
        c if c < 0x20 || c == 0x7f => format!("\\x{c:02x}"),
        c if (0x80..=0xa0).contains(&c) || c == 0xad => format!("\\u{c:04x}"),
        c => char::from(c).to_string(),
    };
    format!("'{inner}'")
}

/// How Go names the JSON value at the top of a document in an unmarshal error
/// (`array`, `string`, `number`, `bool`), or `None` for an object or `null`, which
/// decode into a struct.
pub fn json_value_kind(value: &serde_json::Value) -> Option<&'static str> {
    match value {
        serde_json::Value::Array(_) => Some("array"),
        serde_json::Value::String(_) => Some("string"),
        serde_json::Value::Number(_) => Some("number"),
        serde_json::Value::Bool(_) => Some("bool"),
        serde_json::Value::Object(_) | serde_json::Value::Null => None,
    }
}

/// The error of the apiserver's first look at a body, which reads only its
/// `apiVersion` and `kind`: `couldn't get version/kind; json parse error: …`, for a
/// body that is not JSON or whose top-level value is not an object (`kind` as given
/// by [`json_value_kind`]).
pub fn version_kind_error(syntax_or_kind: VersionKindError<'_>) -> String {
    let cause = match syntax_or_kind {
        VersionKindError::Syntax(message) => message.to_string(),
        VersionKindError::NotAnObject(kind) => format!(
            "json: cannot unmarshal {kind} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}"
        ),
    };
    format!("couldn't get version/kind; json parse error: {cause}")
}

/// Why [`version_kind_error`] could not read a body's type.
#[derive(Debug, Clone, Copy)]
pub enum VersionKindError<'a> {
    /// A JSON syntax error, from [`json_syntax_error`].
    Syntax(&'a str),
    /// The top-level value is of this kind (see [`json_value_kind`]).
    NotAnObject(&'a str),
}

/// The start of a body as the apiserver quotes it after an unrecognized object: the
/// text itself when it looks like JSON (`{…`), hex otherwise, cut at `max` bytes with
/// ` ...`, or `<empty>`.
pub fn summarize(data: &[u8], max: usize) -> String {
    let (head, more) = if data.len() > max {
        (&data[..max], " ...")
    } else {
        (data, "")
    };
    match data.first() {
        None => "<empty>".to_string(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(head)),
        Some(_) => {
            let hex: String = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}{more}")
        }
    }
}

/// The YAML parser's view of an error (libyaml's fields, as the Go port keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlProblem {
    /// The scanner found it (as opposed to the parser).
    pub scanner: bool,
    pub problem: String,
    /// 0-based line of the problem.
    pub problem_line: u64,
    /// 0-based line of the context (where the enclosing construct started), if any.
    pub context_line: Option<u64>,
}

/// The message of the YAML library behind `sigs.k8s.io/yaml` (yaml.v2) for `p`:
/// `yaml: line 3: mapping values are not allowed in this context`. Its line is the
/// problem's, else the context's; counted from 0, except that a scanner's problem
/// line counts from 1; a line 0 is not mentioned.
pub fn yaml_message(p: &YamlProblem) -> String {
    let line = if p.problem_line != 0 {
        p.problem_line + u64::from(p.scanner)
    } else {
        p.context_line.unwrap_or(0)
    };
    if line == 0 {
        format!("yaml: {}", p.problem)
    } else {
        format!("yaml: line {line}: {}", p.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(data: &str, expected: Option<&str>) {
        assert_eq!(
            json_syntax_error(data.as_bytes()).as_deref(),
            expected,
            "{data:?}"
        );
    }

    #[test]
    fn well_formed_documents_pass() {
        for doc in [
            "{}",
            " { \"a\" : [1, -0.5e+3, true, false, null, \"x\\u00e9\\n\"] } \n",
            "[]",
            "0",
            "-12",
            "\"s\"",
            "{\"a\":{\"b\":[[],{}]}}",
        ] {
            check(doc, None);
        }
    }

    #[test]
    fn syntax_errors_read_as_go_writes_them() {
        check("", Some("unexpected end of JSON input"));
        check("{\"metadata\": {", Some("unexpected end of JSON input"));
        check(
            "{\"a\": }",
            Some("invalid character '}' looking for beginning of value"),
        );
        check(
            "{a: 1}",
            Some("invalid character 'a' looking for beginning of object key string"),
        );
        check("{\"a\" 1}", Some("invalid character '1' after object key"));
        check(
            "{\"a\": 1 \"b\": 2}",
            Some("invalid character '\"' after object key:value pair"),
        );
        check("[1 2]", Some("invalid character '2' after array element"));
        check("{} x", Some("invalid character 'x' after top-level value"));
        check("01", Some("invalid character '1' after top-level value"));
        check(
            "{\"a\": tru}",
            Some("invalid character '}' in literal true (expecting 'e')"),
        );
        check(
            "{\"a\": nil}",
            Some("invalid character 'i' in literal null (expecting 'u')"),
        );
        check("-x", Some("invalid character 'x' in numeric literal"));
        check(
            "1.x",
            Some("invalid character 'x' after decimal point in numeric literal"),
        );
        check(
            "1e",
            Some("invalid character ' ' in exponent of numeric literal"),
        );
        check(
            "\"a\tb\"",
            Some("invalid character '\\t' in string literal"),
        );
        check(
            "\"\\q\"",
            Some("invalid character 'q' in string escape code"),
        );
        check(
            "\"\\u12g4\"",
            Some("invalid character 'g' in \\u hexadecimal character escape"),
        );
        check(
            "{'a': 1}",
            Some("invalid character '\\'' looking for beginning of object key string"),
        );
        check(
            "apiVersion: v1",
            Some("invalid character 'a' looking for beginning of value"),
        );
        check(
            "[1,]",
            Some("invalid character ']' looking for beginning of value"),
        );
    }

    #[test]
    fn the_body_is_summarized_as_text_or_hex() {
        assert_eq!(summarize(b"", 30), "<empty>");
        assert_eq!(summarize(b"{\"a\":1}", 30), "{\"a\":1}");
        assert_eq!(
            summarize(b"{\"metadata\": {\"name\": \"long-name-here\"}}", 30),
            "{\"metadata\": {\"name\": \"long-na ..."
        );
        assert_eq!(summarize(b"a: b", 30), "613a2062");
        assert_eq!(
            summarize(b"apiVersion: v1\nkind: ConfigMap\n", 30),
            "61706956657273696f6e3a2076310a6b696e643a20436f6e6669674d6170 ..."
        );
    }

    #[test]
    fn the_first_look_at_a_body_names_what_it_found() {
        assert_eq!(
            version_kind_error(VersionKindError::Syntax("unexpected end of JSON input")),
            "couldn't get version/kind; json parse error: unexpected end of JSON input"
        );
        assert_eq!(
            version_kind_error(VersionKindError::NotAnObject("array")),
            "couldn't get version/kind; json parse error: json: cannot unmarshal array into Go value of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }"
        );
    }

    #[test]
    fn yaml_lines_follow_the_go_parser() {
        let scanner = |line| YamlProblem {
            scanner: true,
            problem: "mapping values are not allowed in this context".into(),
            problem_line: line,
            context_line: Some(line),
        };
        assert_eq!(
            yaml_message(&scanner(6)),
            "yaml: line 7: mapping values are not allowed in this context"
        );
        assert_eq!(
            yaml_message(&scanner(0)),
            "yaml: mapping values are not allowed in this context"
        );
        let parser = YamlProblem {
            scanner: false,
            problem: "did not find expected key".into(),
            problem_line: 4,
            context_line: Some(0),
        };
        assert_eq!(
            yaml_message(&parser),
            "yaml: line 4: did not find expected key"
        );
        let at_start = YamlProblem {
            problem_line: 0,
            context_line: Some(2),
            ..parser
        };
        assert_eq!(
            yaml_message(&at_start),
            "yaml: line 2: did not find expected key"
        );
    }
}
