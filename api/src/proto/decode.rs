//! Schema-driven decoding of a protobuf message into the JSON Go would write for it:
//! fields in Go declaration order, embedded structs inlined, unset Go values shown as
//! their zero value, `omitempty` / `omitzero` applied, and the apimachinery types with
//! their own JSON form (Time, MicroTime, Quantity, IntOrString, FieldsV1).
//!
//! **Invariant:** decoding recurses at most `MAX_DEPTH` messages deep and never panics.

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value};

use super::schema::{Field, Label, Message, Omit, Type};
use super::wire::{Reader, Wire};
use super::ProtoError;

/// How deep messages may nest; the deepest Kubernetes object is far shallower.
pub(super) const MAX_DEPTH: usize = 64;

/// What the wire held for one field of the message being decoded.
enum Slot<'a> {
    Unset,
    Scalar(Value),
    /// The payloads of a singular message field: several occurrences merge.
    Chunks(Vec<&'a [u8]>),
    List(Vec<Value>),
    /// Go writes map keys sorted.
    Map(BTreeMap<String, Value>),
}

/// Decodes `data` as `msg` and appends its JSON fields to `out`.
pub(super) fn message(
    msg: &'static Message,
    data: &[u8],
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    if depth > MAX_DEPTH {
        return Err(ProtoError::TooDeep { message: msg.name });
    }
    let mut slots: Vec<Slot> = msg.fields.iter().map(|_| Slot::Unset).collect();
    let mut r = Reader::new(data, msg.name);
    while !r.is_empty() {
        let (number, wire) = r.key()?;
        match msg.field(number) {
            Some((i, field)) => read_field(field, wire, &mut r, &mut slots[i], depth)?,
            None => r.skip(wire)?,
        }
    }
    for (field, slot) in msg.fields.iter().zip(slots) {
        write_field(field, slot, depth, out)?;
    }
    Ok(())
}

fn expect(r: &Reader, number: u32, wire: Wire, expected: Wire) -> Result<(), ProtoError> {
    if wire == expected {
        Ok(())
    } else {
        Err(r.wrong_wire_type(number, wire, expected))
    }
}

fn read_field<'a>(
    field: &Field,
    wire: Wire,
    r: &mut Reader<'a>,
    slot: &mut Slot<'a>,
    depth: usize,
) -> Result<(), ProtoError> {
    match field.label {
        Label::Value | Label::Pointer if field.ty.is_message() => {
            expect(r, field.number, wire, Wire::Len)?;
            let payload = r.bytes()?;
            match slot {
                Slot::Chunks(chunks) => chunks.push(payload),
                _ => *slot = Slot::Chunks(vec![payload]),
            }
        }
        Label::Value | Label::Pointer => {
            *slot = Slot::Scalar(scalar(field.ty, field.number, wire, r)?)
        }
        Label::Repeated => {
            let mut values = Vec::new();
            let packable = matches!(field.ty, Type::Bool | Type::Int32 | Type::Int64);
            if packable && wire == Wire::Len {
                let mut packed = Reader::new(r.bytes()?, r.message());
                while !packed.is_empty() {
                    values.push(scalar(field.ty, field.number, Wire::Varint, &mut packed)?);
                }
            } else {
                values.push(element(field.ty, field.number, wire, r, depth)?);
            }
            match slot {
                Slot::List(list) => list.extend(values),
                _ => *slot = Slot::List(values),
            }
        }
        Label::Map => {
            expect(r, field.number, wire, Wire::Len)?;
            let (key, value) = map_entry(field.ty, r.bytes()?, r.message(), depth)?;
            match slot {
                Slot::Map(map) => {
                    map.insert(key, value);
                }
                _ => *slot = Slot::Map(BTreeMap::from([(key, value)])),
            }
        }
    }
    Ok(())
}

/// One value of a repeated field or map: a scalar or a whole message.
fn element(
    ty: Type,
    number: u32,
    wire: Wire,
    r: &mut Reader,
    depth: usize,
) -> Result<Value, ProtoError> {
    if ty.is_message() {
        expect(r, number, wire, Wire::Len)?;
        typed(ty, r.bytes()?, depth + 1)
    } else {
        scalar(ty, number, wire, r)
    }
}

fn scalar(ty: Type, number: u32, wire: Wire, r: &mut Reader) -> Result<Value, ProtoError> {
    match ty {
        Type::String => {
            expect(r, number, wire, Wire::Len)?;
            Ok(Value::String(
                String::from_utf8_lossy(r.bytes()?).into_owned(),
            ))
        }
        Type::Bytes => {
            expect(r, number, wire, Wire::Len)?;
            Ok(Value::String(
                base64::engine::general_purpose::STANDARD.encode(r.bytes()?),
            ))
        }
        Type::Bool => {
            expect(r, number, wire, Wire::Varint)?;
            Ok(Value::Bool(r.varint()? != 0))
        }
        // Go keeps the low 32 bits of the varint.
        Type::Int32 => {
            expect(r, number, wire, Wire::Varint)?;
            Ok(Value::from(r.varint()? as i32))
        }
        Type::Int64 => {
            expect(r, number, wire, Wire::Varint)?;
            Ok(Value::from(r.varint()? as i64))
        }
        _ => Err(r.wrong_wire_type(number, wire, Wire::Len)),
    }
}

fn map_entry(
    ty: Type,
    data: &[u8],
    message: &'static str,
    depth: usize,
) -> Result<(String, Value), ProtoError> {
    let mut r = Reader::new(data, message);
    let (mut key, mut value) = (String::new(), None);
    while !r.is_empty() {
        match r.key()? {
            (1, wire) => {
                expect(&r, 1, wire, Wire::Len)?;
                key = String::from_utf8_lossy(r.bytes()?).into_owned();
            }
            (2, wire) => value = Some(element(ty, 2, wire, &mut r, depth)?),
            (_, wire) => r.skip(wire)?,
        }
    }
    let value = match value {
        Some(value) => value,
        None => zero(ty, depth)?,
    };
    Ok((key, value))
}

/// The JSON of a Go value of type `ty` that was never set.
fn zero(ty: Type, depth: usize) -> Result<Value, ProtoError> {
    Ok(match ty {
        Type::String => Value::String(String::new()),
        Type::Bool => Value::Bool(false),
        Type::Int32 | Type::Int64 => Value::from(0),
        Type::Bytes => Value::Null,
        _ => typed(ty, &[], depth + 1)?,
    })
}

/// Decodes the payload of a message-typed field.
fn typed(ty: Type, data: &[u8], depth: usize) -> Result<Value, ProtoError> {
    match ty {
        Type::Msg(msg) => {
            let mut out = Map::new();
            message(msg, data, depth, &mut out)?;
            Ok(Value::Object(out))
        }
        Type::Time => time(data, false),
        Type::MicroTime => time(data, true),
        Type::Quantity => quantity(data),
        Type::IntOrString => int_or_string(data),
        Type::FieldsV1 => fields_v1(data),
        // Callers only pass message types (`Type::is_message`); a scalar has no payload
        // of its own, so the answer is its zero value.
        Type::String | Type::Bool | Type::Int32 | Type::Int64 | Type::Bytes => zero(ty, depth),
    }
}

fn write_field(
    field: &Field,
    slot: Slot,
    depth: usize,
    out: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    let value = match slot {
        Slot::Unset if field.label == Label::Value => Some(zero(field.ty, depth)?),
        Slot::Unset => None,
        Slot::Scalar(value) => Some(value),
        Slot::Chunks(chunks) if chunks.len() == 1 => Some(typed(field.ty, chunks[0], depth + 1)?),
        Slot::Chunks(chunks) => Some(typed(field.ty, &chunks.concat(), depth + 1)?),
        Slot::List(list) if list.is_empty() => None,
        Slot::List(list) => Some(Value::Array(list)),
        Slot::Map(map) => Some(Value::Object(map.into_iter().collect())),
    };
    if field.is_inline() {
        if let Some(Value::Object(inner)) = value {
            out.extend(inner);
        }
        return Ok(());
    }
    let keep = match (&value, field.omit) {
        (None, Omit::Never) => true,
        (None, _) => false,
        (Some(_), Omit::Never) => true,
        (Some(v), Omit::Empty) => {
            !(field.label == Label::Value && !field.ty.is_message() && is_empty(v))
        }
        (Some(v), Omit::Zero) => field.label != Label::Value || *v != zero(field.ty, depth)?,
    };
    if keep {
        out.insert(field.json.to_owned(), value.unwrap_or(Value::Null));
    }
    Ok(())
}

/// What `omitempty` drops for a Go scalar: false, 0, "" and a nil or empty `[]byte`.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

/// Visits each field of a small fixed message; `visit` returns whether it read the value.
fn each_field<'a>(
    data: &'a [u8],
    message: &'static str,
    mut visit: impl FnMut(u32, Wire, &mut Reader<'a>) -> Result<bool, ProtoError>,
) -> Result<(), ProtoError> {
    let mut r = Reader::new(data, message);
    while !r.is_empty() {
        let (number, wire) = r.key()?;
        if !visit(number, wire, &mut r)? {
            r.skip(wire)?;
        }
    }
    Ok(())
}

/// Reads field `number` as a varint if that is the field at hand.
fn varint_field(r: &mut Reader, at: (u32, Wire), number: u32) -> Result<Option<u64>, ProtoError> {
    if at.0 != number {
        return Ok(None);
    }
    expect(r, number, at.1, Wire::Varint)?;
    r.varint().map(Some)
}

/// Reads field `number` as length-delimited bytes if that is the field at hand.
fn bytes_field<'a>(
    r: &mut Reader<'a>,
    at: (u32, Wire),
    number: u32,
) -> Result<Option<&'a [u8]>, ProtoError> {
    if at.0 != number {
        return Ok(None);
    }
    expect(r, number, at.1, Wire::Len)?;
    r.bytes().map(Some)
}

/// `metav1.Time` keeps whole seconds; `metav1.MicroTime` truncates to microseconds.
/// An empty message is the zero time, which Go writes as `null`.
fn time(data: &[u8], micro: bool) -> Result<Value, ProtoError> {
    if data.is_empty() {
        return Ok(Value::Null);
    }
    let name = if micro { "MicroTime" } else { "Time" };
    let (mut seconds, mut nanos) = (0i64, 0i32);
    each_field(data, name, |number, wire, r| {
        if let Some(v) = varint_field(r, (number, wire), 1)? {
            seconds = v as i64;
        } else if let Some(v) = varint_field(r, (number, wire), 2)? {
            nanos = v as i32;
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    let nanos = if micro {
        i64::from(nanos - nanos % 1000)
    } else {
        0
    };
    let at = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, nanos.rem_euclid(1_000_000_000) as u32))
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or(ProtoError::TimeOutOfRange {
            message: name,
            seconds,
        })?;
    let format = if micro {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Value::String(at.format(format).to_string()))
}

/// A quantity travels as its canonical string; the zero quantity is "0".
fn quantity(data: &[u8]) -> Result<Value, ProtoError> {
    let mut text = None;
    each_field(data, "Quantity", |number, wire, r| {
        let Some(bytes) = bytes_field(r, (number, wire), 1)? else {
            return Ok(false);
        };
        text = Some(String::from_utf8_lossy(bytes).into_owned());
        Ok(true)
    })?;
    match text {
        None => Ok(Value::String("0".to_owned())),
        Some(text) if text.is_empty() => Err(ProtoError::EmptyQuantity),
        Some(text) => Ok(Value::String(text)),
    }
}

fn int_or_string(data: &[u8]) -> Result<Value, ProtoError> {
    let (mut kind, mut int, mut string) = (0i64, 0i32, String::new());
    each_field(data, "IntOrString", |number, wire, r| {
        if let Some(v) = varint_field(r, (number, wire), 1)? {
            kind = v as i64;
        } else if let Some(v) = varint_field(r, (number, wire), 2)? {
            int = v as i32;
        } else if let Some(bytes) = bytes_field(r, (number, wire), 3)? {
            string = String::from_utf8_lossy(bytes).into_owned();
        } else {
            return Ok(false);
        }
        Ok(true)
    })?;
    match kind {
        0 => Ok(Value::from(int)),
        1 => Ok(Value::String(string)),
        other => Err(ProtoError::IntOrStringType(other)),
    }
}

/// FieldsV1 carries a JSON document in field 1; unset is `null`.
fn fields_v1(data: &[u8]) -> Result<Value, ProtoError> {
    let mut raw: &[u8] = &[];
    each_field(data, "FieldsV1", |number, wire, r| {
        let Some(bytes) = bytes_field(r, (number, wire), 1)? else {
            return Ok(false);
        };
        raw = bytes;
        Ok(true)
    })?;
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw).map_err(|err| ProtoError::FieldsV1(err.to_string()))
}
