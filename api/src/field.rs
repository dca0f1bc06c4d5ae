//! Field errors in the shape of apimachinery's `field.Error`, so that messages read
//! exactly as a real apiserver writes them (`spec.ports[0].nodePort: Invalid value: 58080: …`).

use std::fmt;

use serde_json::Value;

/// The kind of a field error; its text and its `StatusCause` reason are the real ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    NotFound,
    Required,
    Duplicate,
    Invalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Internal,
    TypeInvalid,
}

impl ErrorType {
    /// The words apimachinery prints for this type.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::NotFound => "Not found",
            ErrorType::Required => "Required value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::Invalid | ErrorType::TypeInvalid => "Invalid value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::Internal => "Internal error",
        }
    }

    /// The `reason` of the matching `StatusCause`.
    pub fn cause_reason(self) -> &'static str {
        match self {
            ErrorType::NotFound => "FieldValueNotFound",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::Internal => "InternalError",
            ErrorType::TypeInvalid => "FieldValueTypeInvalid",
        }
    }
}

/// A rejected value: JSON scalars print as Go's `%v`/`%q` do; `Go` is text already
/// formatted the way apimachinery prints composite values (`[]string{"10.0.0.1"}`).
#[derive(Debug, Clone, PartialEq)]
pub enum BadValue {
    Json(Value),
    Go(String),
}

/// One validation failure at one field path.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub kind: ErrorType,
    /// Path as apimachinery prints it: `spec.ports[0].nodePort`, `metadata.labels`.
    pub field: String,
    /// The offending value; `None` where the type does not print one.
    pub value: Option<BadValue>,
    pub detail: String,
}

impl FieldError {
    pub fn new(
        kind: ErrorType,
        field: impl Into<String>,
        value: Option<BadValue>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }

    /// An invalid composite value, printed verbatim (`[]string{"10.0.0.1"}`).
    pub fn invalid_go(
        field: impl Into<String>,
        go_value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            ErrorType::Invalid,
            field,
            Some(BadValue::Go(go_value.into())),
            detail,
        )
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(
            ErrorType::Invalid,
            field,
            Some(BadValue::Json(value.into())),
            detail,
        )
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(
            ErrorType::Duplicate,
            field,
            Some(BadValue::Json(value.into())),
            "",
        )
    }

    /// `Unsupported value: "X": supported values: "A", "B"`.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            ErrorType::NotSupported,
            field,
            Some(BadValue::Json(value.into())),
            format!("supported values: {}", list.join(", ")),
        )
    }

    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            field,
            None,
            format!("must have at most {max} bytes"),
        )
    }

    /// `Not found: "x"`, e.g. a volume mount naming no volume.
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::new(
            ErrorType::NotFound,
            field,
            Some(BadValue::Json(value.into())),
            "",
        )
    }

    /// `Too many: 1001: must have at most 1000 items`.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let detail = format!("must have at most {max} items");
        Self::new(
            ErrorType::TooMany,
            field,
            Some(BadValue::Json(actual.into())),
            detail,
        )
    }

    /// The message without the field path (`StatusCause.message`).
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorType::Required
            | ErrorType::Forbidden
            | ErrorType::TooLong
            | ErrorType::Internal => self.kind.text().to_string(),
            _ => match &self.value {
                None => self.kind.text().to_string(),
                Some(BadValue::Go(v)) => format!("{}: {v}", self.kind.text()),
                Some(BadValue::Json(Value::String(v))) => format!("{}: {v:?}", self.kind.text()),
                Some(BadValue::Json(Value::Null)) => format!("{}: \"null\"", self.kind.text()),
                Some(BadValue::Json(v)) => format!("{}: {v}", self.kind.text()),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// Joins errors as apimachinery's aggregate does: one bare, several in `[a, b]`.
pub fn aggregate(errors: &[FieldError]) -> String {
    match errors {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_port_message_reads_like_the_real_apiserver() {
        let err = FieldError::invalid(
            "spec.ports[0].nodePort",
            58080,
            "provided port is not in the valid range. The range of valid ports is 30000-32767",
        );
        assert_eq!(
            err.to_string(),
            "spec.ports[0].nodePort: Invalid value: 58080: provided port is not in the valid range. The range of valid ports is 30000-32767"
        );
    }

    #[test]
    fn strings_are_quoted_and_required_has_no_value() {
        let a = FieldError::invalid(
            "metadata.name",
            "Bad_Name",
            "a lowercase RFC 1123 subdomain",
        );
        let b = FieldError::required("spec.selector", "");
        assert_eq!(
            a.body(),
            "Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"
        );
        assert_eq!(
            aggregate(&[a.clone(), b]),
            format!("[{a}, spec.selector: Required value]")
        );
        let c = FieldError::not_supported("spec.type", "Foo", &["ClusterIP", "NodePort"]);
        assert_eq!(
            c.body(),
            "Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"NodePort\""
        );
    }
}
