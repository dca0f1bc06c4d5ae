//! The protobuf wire format: a bounds-checked reader of keys, varints and
//! length-delimited fields, and a writer of proto3 fields.
//!
//! **Invariant:** the reader never indexes past its slice; every malformed input is a
//! `ProtoError` naming the message being read.

use super::ProtoError;

/// The wire types a field may use (groups, wire types 3 and 4, are rejected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    Varint = 0,
    Fixed64 = 1,
    Len = 2,
    Fixed32 = 5,
}

/// Reads one message's fields from a byte slice.
pub(super) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// `message` names the message in errors.
    pub fn new(data: &'a [u8], message: &'static str) -> Self {
        Self {
            data,
            pos: 0,
            message,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The message being read, as named in errors.
    pub fn message(&self) -> &'static str {
        self.message
    }

    pub fn wrong_wire_type(&self, field: u32, wire: Wire, expected: Wire) -> ProtoError {
        ProtoError::WrongWireType {
            message: self.message,
            field,
            wire: wire as u8,
            expected: expected as u8,
        }
    }

    fn truncated(&self) -> ProtoError {
        ProtoError::Truncated {
            message: self.message,
        }
    }

    pub fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.data.get(self.pos).ok_or_else(|| self.truncated())?;
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(ProtoError::VarintOverflow {
                    message: self.message,
                });
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(ProtoError::VarintOverflow {
            message: self.message,
        })
    }

    /// The next field's number and wire type.
    pub fn key(&mut self) -> Result<(u32, Wire), ProtoError> {
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(ProtoError::FieldNumber {
                message: self.message,
                number,
            });
        }
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            5 => Wire::Fixed32,
            other => {
                return Err(ProtoError::InvalidWireType {
                    message: self.message,
                    wire: other as u8,
                })
            }
        };
        Ok((number as u32, wire))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.data.len())
            .ok_or_else(|| self.truncated())?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The payload of a length-delimited field.
    pub fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| self.truncated())?;
        self.take(len)
    }

    /// Skips the value of a field this schema does not know.
    pub fn skip(&mut self, wire: Wire) -> Result<(), ProtoError> {
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::Fixed64 => self.take(8).map(drop),
            Wire::Len => self.bytes().map(drop),
            Wire::Fixed32 => self.take(4).map(drop),
        }
    }
}

/// Builds a proto3 message: scalar fields holding their default value are left out.
#[derive(Default)]
pub(super) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    pub fn key(&mut self, number: u32, wire: Wire) {
        self.varint((u64::from(number) << 3) | wire as u64);
    }

    /// A length-delimited field, written even when empty.
    pub fn len_field(&mut self, number: u32, payload: &[u8]) {
        self.key(number, Wire::Len);
        self.varint(payload.len() as u64);
        self.buf.extend_from_slice(payload);
    }

    pub fn string(&mut self, number: u32, value: &str) {
        if !value.is_empty() {
            self.len_field(number, value.as_bytes());
        }
    }

    pub fn bool(&mut self, number: u32, value: bool) {
        if value {
            self.key(number, Wire::Varint);
            self.varint(1);
        }
    }

    pub fn int64(&mut self, number: u32, value: i64) {
        if value != 0 {
            self.key(number, Wire::Varint);
            self.varint(value as u64);
        }
    }

    pub fn double(&mut self, number: u32, value: f64) {
        if value != 0.0 {
            self.key(number, Wire::Fixed64);
            self.buf.extend_from_slice(&value.to_le_bytes());
        }
    }

    /// A sub-message, written even when empty (message fields have presence).
    pub fn message(
        &mut self,
        number: u32,
        build: impl FnOnce(&mut Writer) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        let mut inner = Writer::default();
        build(&mut inner)?;
        self.len_field(number, &inner.buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for value in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut w = Writer::default();
            w.varint(value);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes, "Test");
            assert_eq!(r.varint().unwrap(), value);
            assert!(r.is_empty());
        }
        let mut r = Reader::new(&[0xff; 11], "Test");
        assert_eq!(
            r.varint(),
            Err(ProtoError::VarintOverflow { message: "Test" })
        );
        let mut r = Reader::new(&[0x80, 0x80], "Test");
        assert_eq!(r.varint(), Err(ProtoError::Truncated { message: "Test" }));
    }

    #[test]
    fn length_past_the_end_is_an_error() {
        let mut r = Reader::new(&[0x0a, 0x05, b'a'], "Test");
        assert_eq!(r.key().unwrap(), (1, Wire::Len));
        assert_eq!(r.bytes(), Err(ProtoError::Truncated { message: "Test" }));
        let mut r = Reader::new(
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            "Test",
        );
        r.key().unwrap();
        assert_eq!(r.bytes(), Err(ProtoError::Truncated { message: "Test" }));
    }

    #[test]
    fn bad_keys_are_errors() {
        assert_eq!(
            Reader::new(&[0x00], "Test").key(),
            Err(ProtoError::FieldNumber {
                message: "Test",
                number: 0
            })
        );
        assert_eq!(
            Reader::new(&[0x0b], "Test").key(),
            Err(ProtoError::InvalidWireType {
                message: "Test",
                wire: 3
            })
        );
        assert_eq!(
            Reader::new(&[0x0f], "Test").key(),
            Err(ProtoError::InvalidWireType {
                message: "Test",
                wire: 7
            })
        );
    }
}
