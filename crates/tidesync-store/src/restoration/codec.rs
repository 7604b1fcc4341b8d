//! The binary encoding of a [`Value`], as stored in the database.
//!
//! # Format (version 1)
//!
//! ```text
//! document := 0x01 value            -- first byte: format version, then exactly one value
//! value    := 0x00                  -- null
//!           | 0x01 | 0x02           -- false | true
//!           | 0x03 i64              -- int: 8 bytes, little-endian two's complement
//!           | 0x04 f64              -- float: 8 bytes, little-endian IEEE-754 bit pattern
//!           | 0x05 len utf8[len]    -- string
//!           | 0x06 len byte[len]    -- bytes
//!           | 0x07 count value*     -- list
//!           | 0x08 count (len utf8[len] value)*   -- map: key, value pairs
//! len, count := unsigned LEB128 varint, shortest form, at most 10 bytes, fits in usize
//! ```
//!
//! The encoding is canonical: one value has exactly one encoding. Map keys are written in
//! strictly increasing byte order (the order of `BTreeMap<String, _>`), varints in their shortest
//! form, and the decoder rejects anything else. Floats keep their bit pattern (NaN payloads,
//! `-0.0`), so `decode(encode(v)) == v` for every value.
//!
//! The decoder is total: any byte string yields a value or a [`DecodeError`], never a panic.
//! Containers nest at most [`MAX_DEPTH`] levels (a scalar has depth 0, a list of scalars depth
//! 1); a length or count is checked against the remaining input before anything is allocated;
//! bytes after the value, unknown tags, invalid UTF-8 and unsorted or duplicate map keys are
//! errors. [`encode`] refuses values nested deeper than [`MAX_DEPTH`], so what it writes can
//! always be read back.

use std::collections::BTreeMap;

use super::value::Value;

/// The format version written as the first byte.
pub const FORMAT_VERSION: u8 = 1;

/// The deepest container nesting the codec accepts (a list of scalars has depth 1).
pub const MAX_DEPTH: usize = 64;

const TAG_NULL: u8 = 0x00;
const TAG_FALSE: u8 = 0x01;
const TAG_TRUE: u8 = 0x02;
const TAG_INT: u8 = 0x03;
const TAG_FLOAT: u8 = 0x04;
const TAG_STRING: u8 = 0x05;
const TAG_BYTES: u8 = 0x06;
const TAG_LIST: u8 = 0x07;
const TAG_MAP: u8 = 0x08;

/// A value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The value nests containers deeper than [`MAX_DEPTH`].
    #[error(
        "restoration value nests lists/maps more than {limit} levels deep; \
         flatten it (restoration state should be small and shallow)"
    )]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}

/// Bytes that are not a valid encoding. Offsets count from the start of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is empty.
    #[error("empty input: expected the format version byte")]
    Empty,
    /// The first byte names a format this build does not read.
    #[error(
        "unsupported restoration format version {found} (this build reads version {FORMAT_VERSION}); \
         the data was written by a newer app version"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// The input ends in the middle of a value.
    #[error("truncated at byte {offset}: expected {needed} bytes of {what}, {remaining} remain")]
    Truncated {
        /// Where the missing bytes should start.
        offset: usize,
        /// How many bytes were needed.
        needed: usize,
        /// What was being read.
        what: &'static str,
        /// How many bytes were left.
        remaining: usize,
    },
    /// A tag byte names no known value type.
    #[error("unknown value tag 0x{tag:02x} at byte {offset}")]
    UnknownTag {
        /// Where the tag is.
        offset: usize,
        /// The tag byte.
        tag: u8,
    },
    /// A varint is longer than 10 bytes, not in shortest form, or too large for this machine.
    #[error("malformed length varint at byte {offset}: {reason}")]
    BadVarint {
        /// Where the varint starts.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A length or count claims more than the remaining input could hold.
    #[error(
        "{what} length {claimed} at byte {offset} exceeds what the remaining {remaining} bytes \
         can hold"
    )]
    LengthTooLarge {
        /// Where the length prefix starts.
        offset: usize,
        /// What the length is of.
        what: &'static str,
        /// The claimed length or count.
        claimed: u64,
        /// Bytes left after the prefix.
        remaining: usize,
    },
    /// A string or map key is not UTF-8.
    #[error("invalid UTF-8 in {what} at byte {offset}")]
    InvalidUtf8 {
        /// Where the text starts.
        offset: usize,
        /// "string" or "map key".
        what: &'static str,
    },
    /// Map keys are not strictly increasing (unsorted or duplicate).
    #[error(
        "map key {key:?} at byte {offset} does not sort after the previous key {previous:?} \
         (keys must be strictly increasing)"
    )]
    MapKeyOrder {
        /// Where the key starts.
        offset: usize,
        /// The offending key.
        key: String,
        /// The key before it.
        previous: String,
    },
    /// Containers nest deeper than [`MAX_DEPTH`].
    #[error("containers nest deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// Where the too-deep container starts.
        offset: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// Bytes follow the value.
    #[error("{count} trailing bytes after the value, starting at byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

/// Encodes `value` in format version 1.
///
/// Fails only if the value nests containers deeper than [`MAX_DEPTH`].
pub fn encode(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(encoded_len(value)?);
    out.push(FORMAT_VERSION);
    write_value(&mut out, value);
    Ok(out)
}

/// The exact length of `encode(value)`, without encoding.
pub fn encoded_len(value: &Value) -> Result<usize, EncodeError> {
    Ok(1 + value_len(value, 0)?)
}

fn value_len(value: &Value, depth: usize) -> Result<usize, EncodeError> {
    Ok(match value {
        Value::Null | Value::Bool(_) => 1,
        Value::Int(_) | Value::Float(_) => 9,
        Value::String(s) => 1 + varint_len(s.len()) + s.len(),
        Value::Bytes(b) => 1 + varint_len(b.len()) + b.len(),
        Value::List(items) => {
            let depth = enter(depth)?;
            let mut n = 1 + varint_len(items.len());
            for item in items {
                n = n.saturating_add(value_len(item, depth)?);
            }
            n
        }
        Value::Map(map) => {
            let depth = enter(depth)?;
            let mut n = 1 + varint_len(map.len());
            for (k, v) in map {
                n = n.saturating_add(varint_len(k.len()) + k.len());
                n = n.saturating_add(value_len(v, depth)?);
            }
            n
        }
    })
}

fn enter(depth: usize) -> Result<usize, EncodeError> {
    if depth >= MAX_DEPTH {
        Err(EncodeError::TooDeep { limit: MAX_DEPTH })
    } else {
        Ok(depth + 1)
    }
}

/// Writes a value already checked for depth by [`encoded_len`].
fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::Float(f) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            write_bytes(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            write_bytes(out, b);
        }
        Value::List(items) => {
            out.push(TAG_LIST);
            write_varint(out, items.len());
            for item in items {
                write_value(out, item);
            }
        }
        Value::Map(map) => {
            out.push(TAG_MAP);
            write_varint(out, map.len());
            for (k, v) in map {
                write_bytes(out, k.as_bytes());
                write_value(out, v);
            }
        }
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn write_varint(out: &mut Vec<u8>, n: usize) {
    let mut n = n as u64;
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Decodes a document written by [`encode`]. Total: never panics, whatever the input.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    let (&version, _) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let mut reader = Reader {
        input: bytes,
        pos: 1,
    };
    let value = reader.value(0)?;
    if reader.pos < bytes.len() {
        return Err(DecodeError::TrailingBytes {
            offset: reader.pos,
            count: bytes.len() - reader.pos,
        });
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        let end = self.pos.checked_add(n).filter(|_| n <= remaining);
        let slice = end.and_then(|end| self.input.get(self.pos..end));
        match slice {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n,
                what,
                remaining,
            }),
        }
    }

    fn fixed8(&mut self, what: &'static str) -> Result<[u8; 8], DecodeError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8, what)?);
        Ok(buf)
    }

    fn varint(&mut self) -> Result<(usize, u64), DecodeError> {
        let start = self.pos;
        let mut result: u64 = 0;
        for i in 0..10u32 {
            let byte = self.take(1, "varint")?[0];
            let bits = u64::from(byte & 0x7f);
            if i == 9 && byte > 0x01 {
                return Err(bad_varint(start, "value overflows 64 bits"));
            }
            result |= bits << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(bad_varint(start, "not in shortest form"));
                }
                return Ok((start, result));
            }
        }
        Err(bad_varint(start, "longer than 10 bytes"))
    }

    /// Reads a length or count and checks that `min_bytes_each` bytes per unit fit in the rest.
    fn length(&mut self, what: &'static str, min_bytes_each: usize) -> Result<usize, DecodeError> {
        let (offset, claimed) = self.varint()?;
        let remaining = self.remaining();
        let fits = usize::try_from(claimed).ok().filter(|&n| {
            n.checked_mul(min_bytes_each)
                .is_some_and(|b| b <= remaining)
        });
        fits.ok_or(DecodeError::LengthTooLarge {
            offset,
            what,
            claimed,
            remaining,
        })
    }

    fn text(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.length(what, 1)?;
        let offset = self.pos;
        let raw = self.take(len, what)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { offset, what })
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let offset = self.pos;
        let tag = self.take(1, "value tag")?[0];
        Ok(match tag {
            TAG_NULL => Value::Null,
            TAG_FALSE => Value::Bool(false),
            TAG_TRUE => Value::Bool(true),
            TAG_INT => Value::Int(i64::from_le_bytes(self.fixed8("i64")?)),
            TAG_FLOAT => Value::Float(f64::from_bits(u64::from_le_bytes(self.fixed8("f64")?))),
            TAG_STRING => Value::String(self.text("string")?),
            TAG_BYTES => {
                let len = self.length("bytes", 1)?;
                Value::Bytes(self.take(len, "bytes")?.to_vec())
            }
            TAG_LIST => {
                let depth = self.enter(depth, offset)?;
                // Every element takes at least one byte, so `count` <= remaining input; the
                // preallocation is capped further so it never exceeds the remaining input in bytes.
                let count = self.length("list", 1)?;
                let cap = count.min(self.remaining() / std::mem::size_of::<Value>());
                let mut items = Vec::with_capacity(cap);
                for _ in 0..count {
                    items.push(self.value(depth)?);
                }
                Value::List(items)
            }
            TAG_MAP => {
                let depth = self.enter(depth, offset)?;
                // Every entry takes at least two bytes: key length and value tag.
                let count = self.length("map", 2)?;
                let mut map: BTreeMap<String, Value> = BTreeMap::new();
                for _ in 0..count {
                    let key_offset = self.pos;
                    let key = self.text("map key")?;
                    if let Some((previous, _)) = map.last_key_value() {
                        if key.as_str() <= previous.as_str() {
                            return Err(DecodeError::MapKeyOrder {
                                offset: key_offset,
                                key,
                                previous: previous.clone(),
                            });
                        }
                    }
                    let value = self.value(depth)?;
                    map.insert(key, value);
                }
                Value::Map(map)
            }
            tag => return Err(DecodeError::UnknownTag { offset, tag }),
        })
    }

    fn enter(&self, depth: usize, offset: usize) -> Result<usize, DecodeError> {
        if depth >= MAX_DEPTH {
            Err(DecodeError::TooDeep {
                offset,
                limit: MAX_DEPTH,
            })
        } else {
            Ok(depth + 1)
        }
    }
}

fn bad_varint(offset: usize, reason: &'static str) -> DecodeError {
    DecodeError::BadVarint { offset, reason }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
