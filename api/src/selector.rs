//! Label and field selectors with the grammar, matching rules and error texts of
//! apimachinery's `pkg/labels` and `pkg/fields`, plus the per-kind field labels the real
//! apiserver accepts (its field label conversion functions).
//!
//! Label selectors come from a query string (`-l 'app=web,tier in (a,b),!canary'`), from a
//! `metav1.LabelSelector` object (`matchLabels` / `matchExpressions`) or from a Service's
//! `spec.selector` map. Field selectors read a small set of dotted paths from an object.
//! Nothing here performs I/O; errors carry the exact message the apiserver puts in its
//! `400 Bad Request` status.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::field::{aggregate, FieldError};

/// A selector that the real apiserver would refuse; the text is its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector string or object apimachinery rejects.
    #[error("{0}")]
    Label(String),
    /// A field selector string apimachinery cannot split into terms.
    #[error("{0}")]
    Field(String),
    /// A field label the kind's conversion function does not accept.
    #[error("{0}")]
    UnsupportedField(String),
}

pub type Result<T, E = SelectorError> = std::result::Result<T, E>;

const LABEL_KEY_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const DNS_SUBDOMAIN_MAX: usize = 253;
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";

/// `msg (e.g. 'a' or 'b', regex used for validation is 're')`, as apimachinery's RegexError.
fn regex_error(msg: &str, re: &str, examples: &[&str]) -> String {
    let quoted: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{re}')",
        quoted.join(" or ")
    )
}

fn max_len_error(max: usize) -> String {
    format!("must be no more than {max} bytes")
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: the shape of a label name and of a non-empty value.
fn is_label_token(s: &str) -> bool {
    crate::validation::qualified_part_ok(s)
}

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            edge(first) && edge(last) && b.iter().all(|c| edge(c) || *c == b'-')
        }
        _ => false,
    }
}

fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > DNS_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_dns1123_label) {
        errs.push(regex_error(
            DNS_SUBDOMAIN_MSG,
            DNS_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// The messages apimachinery's `IsLabelKey` gives for `key`; empty when the key is valid.
fn label_key_errors(key: &str) -> Vec<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(LABEL_KEY_MSG, LABEL_KEY_FMT, &["MyName", "my.name", "123-abc"])
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_KEY_MAX {
        errs.push(format!("name part {}", max_len_error(LABEL_KEY_MAX)));
    }
    if !is_label_token(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_MSG,
                LABEL_KEY_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// The messages apimachinery's `IsLabelValue` gives for `value`; empty when it is valid.
fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !value.is_empty() && !is_label_token(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

fn check_label_key(key: &str, path: &str) -> Option<FieldError> {
    let errs = label_key_errors(key);
    (!errs.is_empty()).then(|| FieldError::invalid(path, key, errs.join("; ")))
}

/// Go's `%#v` of a `[]string`, the way apimachinery prints a rejected value list.
fn go_string_slice(values: Option<&[String]>) -> String {
    match values {
        None => "[]string(nil)".to_string(),
        Some(v) => {
            let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[]string{{{}}}", quoted.join(", "))
        }
    }
}

/// Text of a JSON scalar as a Go string field would hold it.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds and validates a requirement as `labels.NewRequirement` does without a path.
    /// `values` is `None` where Go would hold a nil slice (it only shows in messages).
    fn new(key: &str, op: Operator, values: Option<Vec<String>>) -> Result<Self> {
        let mut errs: Vec<FieldError> = check_label_key(key, "key").into_iter().collect();
        let given = values.as_deref();
        let vals = given.unwrap_or_default();
        match op {
            Operator::In | Operator::NotIn if vals.is_empty() => errs.push(FieldError::invalid_go(
                "values",
                go_string_slice(given),
                "for 'in', 'notin' operators, values set can't be empty",
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals if vals.len() != 1 => {
                errs.push(FieldError::invalid_go(
                    "values",
                    go_string_slice(given),
                    "exact-match compatibility requires one single value",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !vals.is_empty() => {
                errs.push(FieldError::invalid_go(
                    "values",
                    go_string_slice(given),
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if vals.len() != 1 {
                    errs.push(FieldError::invalid_go(
                        "values",
                        go_string_slice(given),
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in vals.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(FieldError::invalid(
                            format!("values[{i}]"),
                            v.as_str(),
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in vals.iter().enumerate() {
            let msgs = label_value_errors(v);
            if !msgs.is_empty() {
                errs.push(FieldError::invalid(
                    format!("values[{i}][{key}]"),
                    v.as_str(),
                    msgs.join("; "),
                ));
            }
        }
        if errs.is_empty() {
            Ok(Requirement {
                key: key.to_string(),
                op,
                values: vals.to_vec(),
            })
        } else {
            let mut seen = BTreeSet::new();
            errs.retain(|e| seen.insert(e.to_string()));
            Err(SelectorError::Label(aggregate(&errs)))
        }
    }

    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).and_then(Value::as_str);
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            Operator::In | Operator::Equals | Operator::DoubleEquals => value.is_some_and(listed),
            Operator::NotIn | Operator::NotEquals => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), [want]) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.as_slice(),
                ) else {
                    return false;
                };
                match want.parse::<i64>() {
                    Ok(want) if self.op == Operator::GreaterThan => have > want,
                    Ok(want) => have < want,
                    Err(_) => false,
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Operator::Exists => return f.write_str(&self.key),
            Operator::DoesNotExist => return write!(f, "!{}", self.key),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        let mut values = self.values.clone();
        values.sort();
        let values = values.join(",");
        if matches!(self.op, Operator::In | Operator::NotIn) {
            write!(f, "{}{op}({values})", self.key)
        } else {
            write!(f, "{}{op}{values}", self.key)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selection {
    /// Matches no object (a nil `metav1.LabelSelector`, a Service without selector).
    Nothing,
    /// Matches objects satisfying every requirement; none means everything.
    All(Vec<Requirement>),
}

/// A parsed label selector: an AND of requirements, kept sorted by key like apimachinery's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Selection);

impl LabelSelector {
    fn from_requirements(mut reqs: Vec<Requirement>) -> Self {
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector(Selection::All(reqs))
    }

    /// Parses the query-string form (`labelSelector=`), as `labels.Parse` does.
    pub fn parse(s: &str) -> Result<Self> {
        Parser::new(s).parse().map(Self::from_requirements)
    }

    /// Converts a `metav1.LabelSelector` object as `metav1.LabelSelectorAsSelector` does:
    /// `null` selects nothing, `{}` selects everything.
    pub fn from_object(sel: &Value) -> Result<Self> {
        let obj = match sel {
            Value::Null => return Ok(LabelSelector(Selection::Nothing)),
            Value::Object(obj) => obj,
            other => {
                return Err(SelectorError::Label(format!(
                    "label selector must be an object, got {other}"
                )))
            }
        };
        let mut reqs = Vec::new();
        if let Some(labels) = obj.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                reqs.push(Requirement::new(
                    k,
                    Operator::Equals,
                    Some(scalar_text(v).into_iter().collect()),
                )?);
            }
        }
        for expr in obj
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |name: &str| expr.get(name).and_then(Value::as_str).unwrap_or_default();
            let op = match text("operator") {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::Label(format!(
                        "{other:?} is not a valid label selector operator"
                    )))
                }
            };
            let values = expr
                .get("values")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty())
                .map(|v| v.iter().filter_map(scalar_text).collect());
            reqs.push(Requirement::new(text("key"), op, values)?);
        }
        Ok(Self::from_requirements(reqs))
    }

    /// An equality selector from a Service's `spec.selector`.
    ///
    /// An empty map selects **nothing**: the real apiserver stores `{}` and an absent
    /// selector alike, and its endpoint controllers publish no endpoints for a Service
    /// without a selector. Values are not validated (the Service was validated on write).
    pub fn from_map(m: &Map<String, Value>) -> Self {
        if m.is_empty() {
            return LabelSelector(Selection::Nothing);
        }
        let reqs = m
            .iter()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Operator::Equals,
                values: scalar_text(v).into_iter().collect(),
            })
            .collect();
        Self::from_requirements(reqs)
    }

    /// Whether the labels satisfy every requirement; always false for a selector of nothing.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        match &self.0 {
            Selection::Nothing => false,
            Selection::All(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// True when the selector does not restrict anything (it selects every object).
    /// A selector of nothing is not empty, as in apimachinery.
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, Selection::All(reqs) if reqs.is_empty())
    }
}

/// The canonical text `labels.Selector.String()` prints: requirements by key, joined by
/// `,`; set values sorted. Everything and nothing both print as the empty string.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Selection::All(reqs) = &self.0 else {
            return Ok(());
        };
        for (i, r) in reqs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// The token a single operator character starts, or `None` for identifier characters.
fn symbol(c: u8) -> Option<Token> {
    Some(match c {
        b')' => Token::ClosedPar,
        b',' => Token::Comma,
        b'!' => Token::DoesNotExist,
        b'=' => Token::Equals,
        b'>' => Token::GreaterThan,
        b'<' => Token::LessThan,
        b'(' => Token::OpenPar,
        _ => return None,
    })
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether the parser reads a keyword as an operator or as a plain value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

/// The label selector lexer and recursive-descent parser. A NUL byte ends the input at a
/// token start and ends an identifier, as in the reference lexer.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    items: Vec<(Token, &'a str)>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            items: Vec::new(),
            next: 0,
        }
    }

    fn read(&mut self) -> u8 {
        match self.src.as_bytes().get(self.pos) {
            Some(&c) => {
                self.pos += 1;
                c
            }
            None => 0,
        }
    }

    fn lex(&mut self) -> (Token, &'a str) {
        let mut c = self.read();
        while is_blank(c) {
            c = self.read();
        }
        if c == 0 {
            return (Token::End, "");
        }
        self.pos -= 1;
        let start = self.pos;
        if let Some(single) = symbol(c) {
            let (tok, len) = match (single, self.src.as_bytes().get(start + 1)) {
                (Token::Equals, Some(b'=')) => (Token::DoubleEquals, 2),
                (Token::DoesNotExist, Some(b'=')) => (Token::NotEquals, 2),
                _ => (single, 1),
            };
            self.pos = start + len;
            return (tok, &self.src[start..self.pos]);
        }
        let end = loop {
            let before = self.pos;
            let c = self.read();
            if c == 0 {
                break before;
            }
            if symbol(c).is_some() || is_blank(c) {
                self.pos -= 1;
                break self.pos;
            }
        };
        let lit = &self.src[start..end];
        let tok = match lit {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        (tok, lit)
    }

    fn scan(&mut self) {
        loop {
            let item = self.lex();
            self.items.push(item);
            if item.0 == Token::End {
                break;
            }
        }
    }

    fn peek(&self, ctx: Context) -> (Token, &'a str) {
        let (tok, lit) = self
            .items
            .get(self.next)
            .copied()
            .unwrap_or((Token::End, ""));
        match tok {
            Token::In | Token::NotIn if ctx == Context::Values => (Token::Identifier, lit),
            _ => (tok, lit),
        }
    }

    fn consume(&mut self, ctx: Context) -> (Token, &'a str) {
        let item = self.peek(ctx);
        self.next += 1;
        item
    }

    fn parse(mut self) -> Result<Vec<Requirement>> {
        self.scan();
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.peek(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let req = self.requirement().map_err(|e| {
                        SelectorError::Label(format!("unable to parse requirement: {e}"))
                    })?;
                    reqs.push(req);
                    let (tok, lit) = self.consume(Context::Values);
                    match tok {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let (tok, lit) = self.peek(Context::Values);
                            if tok != Token::Identifier && tok != Token::DoesNotExist {
                                return Err(label_err(format!(
                                    "found '{lit}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(label_err(format!(
                                "found '{lit}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::End => return Ok(reqs),
                _ => {
                    return Err(label_err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement> {
        let (key, op) = self.key_and_inferred_operator()?;
        if let Some(op) = op {
            return Requirement::new(key, op, Some(Vec::new()));
        }
        let op = self.operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        Requirement::new(key, op, Some(values.into_iter().collect()))
    }

    /// Reads `[!]KEY`; the operator is known already for `!KEY` and for a bare `KEY`.
    fn key_and_inferred_operator(&mut self) -> Result<(&'a str, Option<Operator>)> {
        let (mut tok, mut lit) = self.consume(Context::Values);
        let negated = tok == Token::DoesNotExist;
        if negated {
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(label_err(format!("found '{lit}', expected: identifier")));
        }
        if let Some(err) = check_label_key(lit, "<nil>") {
            return Err(label_err(err.to_string()));
        }
        if negated {
            return Ok((lit, Some(Operator::DoesNotExist)));
        }
        let (next, _) = self.peek(Context::Values);
        let op = matches!(next, Token::End | Token::Comma).then_some(Operator::Exists);
        Ok((lit, op))
    }

    fn operator(&mut self) -> Result<Operator> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(label_err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                )))
            }
        })
    }

    fn value_set(&mut self) -> Result<BTreeSet<String>> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(label_err(format!("found '{lit}' expected: '('")));
        }
        let (tok, lit) = self.peek(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.identifiers()?;
                if self.consume(Context::Values).0 != Token::ClosedPar {
                    return Err(label_err(format!("found '{lit}', expected: ')'")));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(label_err(format!(
                "found '{lit}', expected: ',', ')' or identifier"
            ))),
        }
    }

    /// A comma-separated list where empty entries stand for the empty value.
    fn identifiers(&mut self) -> Result<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit.to_string());
                    let (next, next_lit) = self.peek(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => return Ok(set),
                        _ => {
                            return Err(label_err(format!(
                                "found '{next_lit}', expected: ',' or ')'"
                            )))
                        }
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.peek(Context::Values).0 {
                        Token::ClosedPar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => {
                    return Err(label_err(format!(
                        "found '{lit}', expected: ',', or identifier"
                    )))
                }
            }
        }
    }

    fn exact_value(&mut self) -> Result<BTreeSet<String>> {
        if matches!(self.peek(Context::Values).0, Token::End | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        match self.consume(Context::Values) {
            (Token::Identifier, lit) => Ok(BTreeSet::from([lit.to_string()])),
            (_, lit) => Err(label_err(format!("found '{lit}', expected: identifier"))),
        }
    }
}

fn label_err(msg: String) -> SelectorError {
    SelectorError::Label(msg)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    value: String,
}

/// A parsed field selector: an AND of `field=value` / `field!=value` terms, sorted like
/// apimachinery sorts them (so the first unsupported label reported is the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on commas not escaped by a backslash; the backslashes stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator found scanning left to right.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    term.char_indices().find_map(|(i, _)| {
        let rest = &term[i..];
        [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ]
        .into_iter()
        .find(|(text, _)| rest.starts_with(text))
        .map(|(text, op)| (&term[..i], op, &term[i + text.len()..]))
    })
}

fn unescape_value(s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Field(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' || c == '=' {
            return Err(SelectorError::Field(format!(
                "invalid field selector: unescaped character in value: {}",
                u32::from(c)
            )));
        } else {
            out.push(c);
        }
    }
    if escaped {
        return Err(SelectorError::Field(
            "invalid field selector: invalid escape sequence: \\".to_string(),
        ));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses `metadata.name=x,status.phase!=Running`, as `fields.ParseSelector` does
    /// (values may escape `\\`, `,` and `=` with a backslash).
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            let (field, op, raw) = split_term(part).ok_or_else(|| {
                SelectorError::Field(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ))
            })?;
            terms.push(FieldTerm {
                field: field.to_string(),
                op,
                value: unescape_value(raw)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// The field labels used, in the order the apiserver checks them.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Whether the object satisfies every term. A field the object lacks reads as the
    /// empty string, as a missing entry of apimachinery's `fields.Set` does.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(obj, &t.field);
            (have == t.value) == (t.op == FieldOp::Equals)
        })
    }
}

fn path_text(obj: &Value, path: &str) -> Option<String> {
    path.split('.')
        .try_fold(obj, |v, seg| v.get(seg))
        .and_then(scalar_text)
}

/// The value the real apiserver's `ToSelectableFields` puts under `field` for `obj`.
fn field_value(obj: &Value, field: &str) -> String {
    let text = |path: &str| path_text(obj, path).unwrap_or_default();
    match field {
        "spec.host" => text("spec.nodeName"),
        "status.podIP" => path_text(obj, "status.podIP")
            .filter(|ip| !ip.is_empty())
            .or_else(|| obj.pointer("/status/podIPs/0/ip").and_then(scalar_text))
            .unwrap_or_default(),
        "status.podIPs" => String::new(),
        "spec.hostNetwork" | "spec.unschedulable" => {
            path_text(obj, field).unwrap_or_else(|| "false".to_string())
        }
        "status.successful" => {
            path_text(obj, "status.succeeded").unwrap_or_else(|| "0".to_string())
        }
        "status.replicas" => path_text(obj, field).unwrap_or_else(|| "0".to_string()),
        "source" => Some(text("source.component"))
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| text("reportingComponent")),
        _ => text(field),
    }
}

const META_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The field labels the real apiserver accepts in a `fieldSelector` for `kind` (its field
/// label conversion function), or `metadata.name` / `metadata.namespace` for kinds without one.
pub fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
            "spec.host",
        ],
        "Node" => &["metadata.name", "spec.unschedulable"],
        "ReplicationController" => &["metadata.name", "metadata.namespace", "status.replicas"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        "Namespace" => &["status.phase", "metadata.name"],
        "Secret" => &["type", "metadata.namespace", "metadata.name"],
        "Service" => &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        "Job" => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => META_FIELDS,
    }
}

/// Rejects the first field label `kind` does not support, with the message of that
/// kind's conversion function: `field label not supported: <name>` for kinds that have
/// one, apimachinery's default text for the others.
pub fn check_fields(kind: &str, selector: &FieldSelector) -> Result<()> {
    let supported = supported_fields(kind);
    let Some(bad) = selector.fields().find(|f| !supported.contains(f)) else {
        return Ok(());
    };
    let msg = match kind {
        "Pod" | "Node" | "ReplicationController" | "Event" | "Namespace" | "Secret" | "Service" => {
            format!("field label not supported: {bad}")
        }
        "Job" => format!("field label {bad:?} not supported for batchv1.Job"),
        _ => format!(
            "{bad:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        ),
    };
    Err(SelectorError::UnsupportedField(msg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test labels must be an object, got {other}"),
        }
    }

    /// Parses `selector`, then checks its canonical text and which label sets it selects.
    fn check(selector: &str, canonical: &str, selected: &[Value], rejected: &[Value]) {
        let sel = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(sel.to_string(), canonical, "canonical form of {selector}");
        for l in selected {
            assert!(
                sel.matches(&labels(l.clone())),
                "{selector} should select {l}"
            );
        }
        for l in rejected {
            assert!(
                !sel.matches(&labels(l.clone())),
                "{selector} should not select {l}"
            );
        }
    }

    fn check_error(selector: &str, message: &str) {
        match LabelSelector::parse(selector) {
            Ok(sel) => panic!("{selector} parsed as {sel}"),
            Err(e) => assert_eq!(e.to_string(), message, "error for {selector}"),
        }
    }

    #[test]
    fn each_label_operator() {
        check(
            "app=web",
            "app=web",
            &[json!({"app": "web"})],
            &[json!({"app": "db"}), json!({})],
        );
        check(
            "app==web",
            "app==web",
            &[json!({"app": "web", "x": "y"})],
            &[json!({"app": "Web"})],
        );
        check(
            "app!=web",
            "app!=web",
            &[json!({"app": "db"}), json!({})],
            &[json!({"app": "web"})],
        );
        check(
            "tier in (b, a)",
            "tier in (a,b)",
            &[json!({"tier": "a"}), json!({"tier": "b"})],
            &[json!({"tier": "c"}), json!({})],
        );
        check(
            "tier notin (z)",
            "tier notin (z)",
            &[json!({"tier": "a"}), json!({})],
            &[json!({"tier": "z"})],
        );
        check("canary", "canary", &[json!({"canary": ""})], &[json!({})]);
        check(
            "!canary",
            "!canary",
            &[json!({})],
            &[json!({"canary": "true"})],
        );
        check(
            "gen>2",
            "gen>2",
            &[json!({"gen": "3"})],
            &[json!({"gen": "2"}), json!({"gen": "x"}), json!({})],
        );
        check(
            "gen<2",
            "gen<2",
            &[json!({"gen": "1"})],
            &[json!({"gen": "2"}), json!({})],
        );
        check(
            "in in (in)",
            "in in (in)",
            &[json!({"in": "in"})],
            &[json!({"in": "out"})],
        );
    }

    #[test]
    fn conjunctions_sort_by_key_and_keep_empty_values() {
        check(
            "z=1, a in (x,,y), !b, example.com/role",
            "a in (,x,y),!b,example.com/role,z=1",
            &[json!({"z": "1", "a": "", "example.com/role": "db"})],
            &[
                json!({"z": "1", "a": "x", "b": "", "example.com/role": "db"}),
                json!({"z": "1", "a": "x"}),
            ],
        );
        check(
            "a=",
            "a=",
            &[json!({"a": ""})],
            &[json!({"a": "b"}), json!({})],
        );
        check(
            "a in ()",
            "a in ()",
            &[json!({"a": ""})],
            &[json!({"a": "b"})],
        );
        check("", "", &[json!({}), json!({"a": "b"})], &[]);
        assert!(LabelSelector::parse(" ").is_ok_and(|s| s.is_empty()));
        assert!(!LabelSelector::parse("a").is_ok_and(|s| s.is_empty()));
    }

    const KEY_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    #[test]
    fn parse_errors_read_like_apimachinery() {
        check_error(
            "a b",
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
        );
        check_error("a=b c", "found 'c', expected: ',' or 'end of string'");
        check_error("a=b,", "found '', expected: identifier after ','");
        check_error(
            ",a",
            "found ',', expected: !, identifier, or 'end of string'",
        );
        check_error(
            "a in b",
            "unable to parse requirement: found 'b' expected: '('",
        );
        check_error(
            "a in (b c)",
            "unable to parse requirement: found 'c', expected: ',' or ')'",
        );
        check_error(
            "a in (=)",
            "unable to parse requirement: found '=', expected: ',', ')' or identifier",
        );
        check_error(
            "a==(",
            "unable to parse requirement: found '(', expected: identifier",
        );
        check_error(
            "!=a",
            "found '!=', expected: !, identifier, or 'end of string'",
        );
        check_error(
            "! =a",
            "unable to parse requirement: found '=', expected: identifier",
        );
        check_error("!a=b", "found '=', expected: ',' or 'end of string'");
        check_error(
            "-a=b",
            &format!(
                "unable to parse requirement: <nil>: Invalid value: \"-a\": name part {KEY_RULE}"
            ),
        );
        check_error(
            "a/b/c",
            &format!("unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key {KEY_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
        );
        check_error(
            "Ex.com/a",
            "unable to parse requirement: <nil>: Invalid value: \"Ex.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        );
        check_error(
            "app=-x",
            &format!(
                "unable to parse requirement: values[0][app]: Invalid value: \"-x\": {VALUE_RULE}"
            ),
        );
        let long = "v".repeat(64);
        check_error(
            &format!("app={long}"),
            &format!("unable to parse requirement: values[0][app]: Invalid value: \"{long}\": must be no more than 63 bytes"),
        );
        check_error(
            "gen>x",
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer",
        );
    }

    #[test]
    fn label_selector_objects() {
        let sel = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "track", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"}
            ]
        }));
        let sel = sel.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            sel.to_string(),
            "app=web,env notin (prod),!legacy,tier in (a,b),track"
        );
        assert!(sel.matches(&labels(json!({"app": "web", "tier": "a", "track": "x"}))));
        assert!(!sel.matches(&labels(
            json!({"app": "web", "tier": "a", "track": "x", "legacy": "1"})
        )));
        assert!(!sel.matches(&labels(
            json!({"app": "web", "tier": "a", "track": "x", "env": "prod"})
        )));

        let everything = LabelSelector::from_object(&json!({}));
        assert!(everything
            .as_ref()
            .is_ok_and(|s| s.is_empty() && s.matches(&Map::new())));
        let nothing = LabelSelector::from_object(&Value::Null);
        assert!(nothing
            .as_ref()
            .is_ok_and(|s| !s.is_empty() && !s.matches(&Map::new())));

        let errors = [
            (json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}), "\"Gt\" is not a valid label selector operator".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "In"}]}), "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty".to_string()),
            (json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}), "values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist".to_string()),
            (json!({"matchLabels": {"a_": "b"}}), format!("key: Invalid value: \"a_\": name part {KEY_RULE}")),
            (
                json!({"matchExpressions": [{"key": "-k", "operator": "In", "values": ["-v"]}]}),
                format!("[key: Invalid value: \"-k\": name part {KEY_RULE}, values[0][-k]: Invalid value: \"-v\": {VALUE_RULE}]"),
            ),
        ];
        for (obj, message) in errors {
            match LabelSelector::from_object(&obj) {
                Ok(sel) => panic!("{obj} accepted as {sel}"),
                Err(e) => assert_eq!(e.to_string(), message, "error for {obj}"),
            }
        }
    }

    #[test]
    fn service_selector_maps() {
        let sel = LabelSelector::from_map(&labels(json!({"tier": "web", "app": "shop"})));
        assert_eq!(sel.to_string(), "app=shop,tier=web");
        assert!(sel.matches(&labels(
            json!({"app": "shop", "tier": "web", "pod-template-hash": "1"})
        )));
        assert!(!sel.matches(&labels(json!({"app": "shop"}))));
        let none = LabelSelector::from_map(&Map::new());
        assert!(!none.matches(&Map::new()) && !none.is_empty() && none.to_string().is_empty());
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"nodeName": "node-a", "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.5"}]}
        })
    }

    /// Parses `selector` and checks whether it selects `obj`.
    fn check_field(selector: &str, obj: &Value, expected: bool) {
        let sel = FieldSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(sel.matches(obj), expected, "{selector} against {obj}");
    }

    #[test]
    fn field_selectors_match_dotted_paths() {
        let pod = pod();
        check_field("metadata.name=web-1", &pod, true);
        check_field("metadata.name==web-2", &pod, false);
        check_field("status.phase!=Running", &pod, false);
        check_field("spec.nodeName=node-a,metadata.namespace=shop", &pod, true);
        check_field("spec.host=node-a", &pod, true);
        check_field("status.podIP=10.244.1.5", &pod, true);
        check_field("spec.hostNetwork=false", &pod, true);
        check_field("status.nominatedNodeName=", &pod, true);
        check_field("spec.schedulerName!=", &pod, false);
        check_field("", &pod, true);
        let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        check_field("spec.unschedulable=true", &node, true);
        let event = json!({
            "type": "Warning", "reason": "BackOff", "reportingComponent": "kubelet",
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "source": {}
        });
        check_field("involvedObject.name=web-1,type=Warning", &event, true);
        check_field("source=kubelet", &event, true);
        check_field("reason=Pulled", &event, false);
        let odd = json!({"metadata": {"name": "a,b=c"}});
        check_field("metadata.name=a\\,b\\=c", &odd, true);
    }

    #[test]
    fn field_selector_errors() {
        let cases = [
            (
                "metadata.name",
                "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
            ),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: 61",
            ),
            (
                "a=b\\x",
                "invalid field selector: invalid escape sequence: \\x",
            ),
            (
                "a=b\\",
                "invalid field selector: invalid escape sequence: \\",
            ),
        ];
        for (selector, message) in cases {
            match FieldSelector::parse(selector) {
                Ok(sel) => panic!("{selector} parsed as {sel:?}"),
                Err(e) => assert_eq!(e.to_string(), message, "error for {selector}"),
            }
        }
    }

    #[test]
    fn unsupported_field_labels() {
        let sel = |s: &str| FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let cases = [
            ("Pod", "spec.nodeName=a,status.phase=Running", None),
            ("Pod", "status.phase=Running,spec.foo=1,spec.bar=2", Some("field label not supported: spec.bar")),
            ("Node", "metadata.namespace=x", Some("field label not supported: metadata.namespace")),
            ("Event", "involvedObject.uid=1,source=kubelet", None),
            ("Secret", "type=Opaque", None),
            ("Service", "spec.clusterIP=None", None),
            ("Job", "status.active=1", Some("field label \"status.active\" not supported for batchv1.Job")),
            ("ConfigMap", "metadata.name=a", None),
            (
                "ConfigMap",
                "data.x=1",
                Some("\"data.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""),
            ),
        ];
        for (kind, selector, expected) in cases {
            let got = check_fields(kind, &sel(selector))
                .err()
                .map(|e| e.to_string());
            assert_eq!(got.as_deref(), expected, "{kind} {selector}");
        }
        assert!(supported_fields("Namespace").contains(&"status.phase"));
        assert_eq!(
            sel("b=1,a!=2").fields().collect::<Vec<_>>(),
            vec!["a", "b"],
            "fields come back in the order they are checked"
        );
    }
}
