//! The shape of the schema table in `kinds.rs`: for each protobuf message, its fields by
//! number with the JSON name, the wire type and how Go would write the field as JSON.
//!
//! **Invariant:** field numbers are unique within a message, and a field with an empty
//! JSON name is an embedded (`json:",inline"`) Go struct, so its type is a message.

/// One protobuf message of the Kubernetes API.
pub(super) struct Message {
    /// The message name, for error messages.
    pub name: &'static str,
    /// The fields in Go declaration order, which is the order Go writes them as JSON.
    pub fields: &'static [Field],
}

impl Message {
    pub fn field(&self, number: u32) -> Option<(usize, &'static Field)> {
        self.fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.number == number)
    }
}

/// One field of a message.
pub(super) struct Field {
    pub number: u32,
    /// The JSON name; empty for an embedded struct whose fields are written inline.
    pub json: &'static str,
    pub ty: Type,
    pub label: Label,
    pub omit: Omit,
}

impl Field {
    pub fn is_inline(&self) -> bool {
        self.json.is_empty()
    }
}

/// `Field` constructor keeping the generated table to one line per field.
pub(super) const fn f(
    number: u32,
    json: &'static str,
    ty: Type,
    label: Label,
    omit: Omit,
) -> Field {
    Field {
        number,
        json,
        ty,
        label,
        omit,
    }
}

/// The type of a field, or of each element of a repeated field or value of a map.
#[derive(Clone, Copy)]
pub(super) enum Type {
    String,
    Bool,
    Int32,
    Int64,
    /// Go `[]byte`: base64 in JSON.
    Bytes,
    Msg(&'static Message),
    /// `metav1.Time`: RFC 3339 with seconds, `null` when zero.
    Time,
    /// `metav1.MicroTime`: RFC 3339 with microseconds, `null` when zero.
    MicroTime,
    /// `resource.Quantity`: its string form.
    Quantity,
    /// `intstr.IntOrString`: a JSON number or string.
    IntOrString,
    /// `metav1.FieldsV1`: the embedded JSON document.
    FieldsV1,
}

impl Type {
    /// Whether the wire form is a length-delimited message.
    pub fn is_message(self) -> bool {
        !matches!(
            self,
            Type::String | Type::Bool | Type::Int32 | Type::Int64 | Type::Bytes
        )
    }
}

/// The Go shape of a field, which decides what an unset field looks like.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Label {
    /// A Go value: unset means the zero value.
    Value,
    /// A Go pointer: unset means `nil`.
    Pointer,
    /// A Go slice: unset means `nil`.
    Repeated,
    /// A Go map with string keys: unset means `nil`.
    Map,
}

/// The `json` tag option that drops a field from the output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Omit {
    /// Always written (`null` for a nil pointer, slice or map).
    Never,
    /// `omitempty`: dropped when false, 0, "", nil or empty; never drops a struct.
    Empty,
    /// `omitzero`: dropped when the value is its type's zero value.
    Zero,
}

/// An object a client may send, identified by the envelope's apiVersion and kind.
pub(super) struct Root {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub message: &'static Message,
}
