//! Malformed and unusual input: every error is a `ProtoError`, never a panic, and the
//! protobuf rules Go follows (unknown fields skipped, packed or unpacked repeated
//! scalars, repeated occurrences of a message merged) hold.

use serde_json::{json, Map, Value};

use super::{check, decode, envelope};
use crate::proto::decode::{message, MAX_DEPTH};
use crate::proto::schema::{f, Label, Message, Omit, Type};
use crate::proto::wire::{Wire, Writer};
use crate::proto::{decode_object, ProtoError, MAGIC};

/// Builds a message with `build`, as bytes.
fn encode(build: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::default();
    build(&mut w);
    w.into_bytes()
}

fn len(w: &mut Writer, number: u32, payload: &[u8]) {
    w.len_field(number, payload);
}

fn varint(w: &mut Writer, number: u32, value: u64) {
    w.key(number, Wire::Varint);
    w.varint(value);
}

/// ObjectMeta { name }.
fn meta(name: &str) -> Vec<u8> {
    encode(|w| len(w, 1, name.as_bytes()))
}

#[test]
fn envelope_errors_match_apimachinery() {
    assert_eq!(decode_object(b""), Err(ProtoError::EmptyData));
    assert_eq!(
        decode_object(b"{\"kind\":\"Pod\"}"),
        Err(ProtoError::MissingMagic)
    );
    assert_eq!(decode_object(b"k8s"), Err(ProtoError::MissingMagic));
    assert_eq!(decode_object(MAGIC), Err(ProtoError::EmptyBody));
    assert_eq!(
        ProtoError::MissingMagic.to_string(),
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    );
}

#[test]
fn envelope_without_kind_or_with_unknown_kind() {
    let mut body = MAGIC.to_vec();
    body.extend(encode(|w| len(w, 2, &meta("x"))));
    assert_eq!(decode_object(&body), Err(ProtoError::MissingKind));

    assert_eq!(
        decode_object(&envelope("batch/v1", "Job", meta("x"))),
        Err(ProtoError::UnknownKind {
            api_version: "batch/v1".into(),
            kind: "Job".into()
        })
    );
    assert_eq!(
        decode_object(&envelope("apps/v1beta2", "Deployment", Vec::new())),
        Err(ProtoError::UnknownKind {
            api_version: "apps/v1beta2".into(),
            kind: "Deployment".into()
        })
    );
}

#[test]
fn compressed_content_is_refused() {
    let mut body = MAGIC.to_vec();
    body.extend(encode(|w| {
        len(
            w,
            1,
            &encode(|w| {
                len(w, 1, b"v1");
                len(w, 2, b"ConfigMap");
            }),
        );
        len(w, 2, b"\x1f\x8b");
        len(w, 3, b"gzip");
    }));
    assert_eq!(
        decode_object(&body),
        Err(ProtoError::ContentEncoding("gzip".into()))
    );
}

#[test]
fn truncated_raw_is_an_error() {
    let raw = encode(|w| len(w, 1, &meta("cfg")));
    let cut = &raw[..raw.len() - 2];
    assert_eq!(
        decode_object(&envelope("v1", "ConfigMap", cut.to_vec())),
        Err(ProtoError::Truncated {
            message: "ConfigMap"
        })
    );
    // The metadata's own name claims 5 bytes and has 1.
    let raw = encode(|w| len(w, 1, &[0x0a, 0x05, b'a']));
    let err = decode_object(&envelope("v1", "ConfigMap", raw)).unwrap_err();
    assert_eq!(
        err,
        ProtoError::Truncated {
            message: "ObjectMeta"
        }
    );
    assert_eq!(err.to_string(), "ObjectMeta: unexpected end of data");
}

#[test]
fn wrong_wire_type_names_message_and_field() {
    let raw = encode(|w| varint(w, 1, 5));
    let err = decode_object(&envelope("v1", "ConfigMap", raw)).unwrap_err();
    assert_eq!(
        err,
        ProtoError::WrongWireType {
            message: "ConfigMap",
            field: 1,
            wire: 0,
            expected: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "ConfigMap: field 1 has wire type 0, expected 2"
    );
}

static LOOP: Message = Message {
    name: "Loop",
    fields: &[f(1, "next", Type::Msg(&LOOP), Label::Pointer, Omit::Empty)],
};

#[test]
fn nesting_is_bounded() {
    let nested =
        |levels: usize| (0..levels).fold(Vec::new(), |inner, _| encode(|w| len(w, 1, &inner)));
    let mut out = Map::new();
    assert_eq!(message(&LOOP, &nested(MAX_DEPTH), 0, &mut out), Ok(()));
    let mut out = Map::new();
    assert_eq!(
        message(&LOOP, &nested(MAX_DEPTH + 2), 0, &mut out),
        Err(ProtoError::TooDeep { message: "Loop" })
    );
}

#[test]
fn special_types_reject_impossible_values() {
    // Service.spec.ports[0].targetPort with IntOrString.type = 2.
    let port = encode(|w| len(w, 4, &encode(|w| varint(w, 1, 2))));
    let raw = encode(|w| len(w, 2, &encode(|w| len(w, 1, &port))));
    assert_eq!(
        decode_object(&envelope("v1", "Service", raw)),
        Err(ProtoError::IntOrStringType(2))
    );

    // ObjectMeta.creationTimestamp far beyond year 9999.
    let raw = encode(|w| {
        len(
            w,
            1,
            &encode(|w| len(w, 8, &encode(|w| varint(w, 1, i64::MAX as u64)))),
        )
    });
    assert!(matches!(
        decode_object(&envelope("v1", "ConfigMap", raw)),
        Err(ProtoError::TimeOutOfRange {
            message: "Time",
            ..
        })
    ));

    // managedFields[0].fieldsV1 that is not JSON.
    let entry = encode(|w| len(w, 7, &encode(|w| len(w, 1, b"{not json"))));
    let raw = encode(|w| len(w, 1, &encode(|w| len(w, 17, &entry))));
    assert!(matches!(
        decode_object(&envelope("v1", "ConfigMap", raw)),
        Err(ProtoError::FieldsV1(_))
    ));

    // A resource limit whose quantity string is empty.
    let quantity_entry = encode(|w| {
        len(w, 1, b"cpu");
        len(w, 2, &encode(|w| len(w, 1, b"")));
    });
    let container = encode(|w| len(w, 8, &encode(|w| len(w, 1, &quantity_entry))));
    let raw = encode(|w| len(w, 2, &encode(|w| len(w, 2, &container))));
    assert_eq!(
        decode_object(&envelope("v1", "Pod", raw)),
        Err(ProtoError::EmptyQuantity)
    );
}

/// Every prefix and every single-byte change of real bodies decodes or fails cleanly.
#[test]
fn corrupted_bodies_never_panic() {
    let bodies: [&[u8]; 3] = [
        include_bytes!("testdata/deployment.pb"),
        include_bytes!("testdata/ingress-tls.pb"),
        include_bytes!("testdata/service-nodeport.pb"),
    ];
    for body in bodies {
        for end in 0..body.len() {
            let _ = decode_object(&body[..end]);
        }
        for i in MAGIC.len()..body.len() {
            for byte in [0x00, 0x01, 0x07, 0x0a, 0x7f, 0x80, 0xff] {
                let mut changed = body.to_vec();
                changed[i] = byte;
                let _ = decode_object(&changed);
            }
        }
    }
}

#[test]
fn unknown_fields_are_skipped() {
    let raw = encode(|w| {
        len(w, 1, &meta("cfg"));
        varint(w, 90, 7);
        len(w, 91, b"future");
        w.key(92, Wire::Fixed64);
        w.varint(0);
        for byte in [0u8; 7] {
            w.varint(u64::from(byte));
        }
        w.key(93, Wire::Fixed32);
        for byte in [0u8; 4] {
            w.varint(u64::from(byte));
        }
    });
    check(
        &decode(&envelope("v1", "ConfigMap", raw)),
        &json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg"}}),
    );
}

#[test]
fn packed_and_unpacked_repeated_scalars_concatenate() {
    // Pod.spec.securityContext.supplementalGroups, once packed and once not.
    let security_context = encode(|w| {
        let mut packed = Writer::default();
        packed.varint(1000);
        packed.varint(2000);
        len(w, 4, &packed.into_bytes());
        varint(w, 4, 3000);
    });
    let raw = encode(|w| len(w, 2, &encode(|w| len(w, 14, &security_context))));
    let got = decode(&envelope("v1", "Pod", raw));
    assert_eq!(
        got["spec"]["securityContext"],
        json!({"supplementalGroups": [1000, 2000, 3000]})
    );
}

#[test]
fn repeated_message_occurrences_merge_and_scalars_keep_the_last() {
    let raw = encode(|w| {
        len(w, 1, &meta("first"));
        len(w, 1, &encode(|w| len(w, 3, b"ns")));
        len(w, 1, &meta("last"));
    });
    let got = decode(&envelope("v1", "ConfigMap", raw));
    assert_eq!(got["metadata"], json!({"name": "last", "namespace": "ns"}));
}

#[test]
fn map_entries_default_missing_parts_and_sort_keys() {
    let raw = encode(|w| {
        len(w, 2, &encode(|w| len(w, 1, b"z")));
        len(w, 2, &encode(|w| len(w, 2, b"no key")));
        len(
            w,
            2,
            &encode(|w| {
                len(w, 1, b"a");
                len(w, 2, b"1");
            }),
        );
    });
    let got = decode(&envelope("v1", "ConfigMap", raw));
    assert_eq!(
        serde_json::to_string(&got["data"]).unwrap(),
        r#"{"":"no key","a":"1","z":""}"#
    );
}

#[test]
fn invalid_utf8_is_replaced_as_go_json_does() {
    let raw = encode(|w| len(w, 1, &encode(|w| len(w, 1, b"bad\xffname"))));
    let got = decode(&envelope("v1", "ConfigMap", raw));
    assert_eq!(
        got["metadata"]["name"],
        Value::String("bad\u{fffd}name".into())
    );
}
