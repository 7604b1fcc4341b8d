//! Hybrid logical clock values.
//!
//! An [`Hlc`] is 48 bits of wall-clock milliseconds since the Unix epoch followed by a 16-bit
//! counter, packed in a `u64` so that numeric order is causal order. On the wire it is 16
//! lowercase hex digits (`"018c2f3a4b5c0001"`): JSON numbers are unsafe above 2^53 in many
//! languages, and a fixed-width hex string also sorts correctly as text.
//!
//! A [`Stamp`] is an HLC plus the client that made it; two different writes never share a
//! stamp, which makes last-writer-wins total. Wire form: `"<16 hex>@<client id>"`.

use std::fmt;
use std::str::FromStr;

use crate::{ClientId, ValidationError};

/// A hybrid logical clock reading: 48-bit milliseconds, 16-bit counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc(u64);

impl Hlc {
    /// The largest millisecond value that fits in 48 bits (year 10889).
    pub const MAX_MILLIS: u64 = (1 << 48) - 1;
    /// The smallest stamp; older than every real write.
    pub const ZERO: Hlc = Hlc(0);

    /// Builds a stamp; `None` if `millis` does not fit in 48 bits.
    pub fn new(millis: u64, counter: u16) -> Option<Hlc> {
        (millis <= Self::MAX_MILLIS).then_some(Hlc((millis << 16) | u64::from(counter)))
    }

    /// The wall-clock part, in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> 16
    }

    /// The logical counter that orders stamps within one millisecond.
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The packed 64-bit form (for storage; order-preserving).
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Inverse of [`Hlc::as_u64`].
    pub fn from_u64(raw: u64) -> Hlc {
        Hlc(raw)
    }
}

impl Hlc {
    /// The 16 lowercase hex digits of the wire form, without going through `fmt` (stamps are
    /// formatted for every field of every stored record).
    fn hex(self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = DIGITS[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The digits are ASCII, so this never fails.
        f.write_str(std::str::from_utf8(&self.hex()).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for Hlc {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Hand-rolled: every pulled change carries several stamps.
        let bytes = s.as_bytes();
        let mut value = 0u64;
        let mut valid = bytes.len() == 16;
        for &b in bytes.iter().take(16) {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => {
                    valid = false;
                    0
                }
            };
            value = (value << 4) | u64::from(digit);
        }
        if valid {
            Ok(Hlc(value))
        } else {
            Err(ValidationError::new(
                "hlc",
                s,
                "must be exactly 16 lowercase hex digits",
            ))
        }
    }
}

impl serde::Serialize for Hlc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

impl<'de> serde::Deserialize<'de> for Hlc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The stamp of one write: its HLC, ties broken by the writing client's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// When it was written.
    pub hlc: Hlc,
    /// Who wrote it.
    pub client: ClientId,
}

impl Stamp {
    /// A stamp from its parts.
    pub fn new(hlc: Hlc, client: ClientId) -> Stamp {
        Stamp { hlc, client }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_wire())
    }
}

impl Stamp {
    /// The wire form `"<16 hex>@<client id>"`, built without `fmt`.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(17 + self.client.as_str().len());
        out.push_str(std::str::from_utf8(&self.hlc.hex()).unwrap_or_default());
        out.push('@');
        out.push_str(self.client.as_str());
        out
    }
}

impl Stamp {
    /// Checks a stamp's wire form without building it (no allocation) and returns its HLC.
    pub fn check_wire(s: &str) -> Result<Hlc, ValidationError> {
        let (hlc, client) = s.split_once('@').ok_or_else(|| {
            ValidationError::new("stamp", s, "must look like <16 hex>@<client id>")
        })?;
        crate::names::check_client_id(client)
            .map_err(|rule| ValidationError::new("client id", client, rule))?;
        hlc.parse()
    }
}

impl FromStr for Stamp {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hlc, client) = s.split_once('@').ok_or_else(|| {
            ValidationError::new("stamp", s, "must look like <16 hex>@<client id>")
        })?;
        Ok(Stamp {
            hlc: hlc.parse()?,
            client: ClientId::new(client)?,
        })
    }
}

impl serde::Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_wire())
    }
}

impl<'de> serde::Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_millis_and_counter_in_causal_order() {
        let a = Hlc::new(1_700_000_000_000, 65535).expect("fits");
        let b = Hlc::new(1_700_000_000_001, 0).expect("fits");
        assert!(a < b);
        assert_eq!(a.millis(), 1_700_000_000_000);
        assert_eq!(a.counter(), 65535);
        assert!(Hlc::new(Hlc::MAX_MILLIS + 1, 0).is_none());
    }

    #[test]
    fn wire_form_is_fixed_width_hex_and_round_trips() {
        let h = Hlc::new(1, 2).expect("fits");
        let json = serde_json::to_string(&h).expect("serialize");
        assert_eq!(json, "\"0000000000010002\"");
        assert_eq!(serde_json::from_str::<Hlc>(&json).expect("parse"), h);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for raw in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef]
            .into_iter()
            .chain((0..1000).map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                x
            }))
        {
            let h = Hlc::from_u64(raw);
            assert_eq!(h.to_string().parse::<Hlc>().expect("round trip"), h);
        }
        for bad in [
            "\"10002\"",
            "\"000000000001000G\"",
            "\"00000000000100 2\"",
            "\"000000000001000A\"",
            "\"0000000000010002a\"",
            "12",
        ] {
            assert!(serde_json::from_str::<Hlc>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stamps_order_by_hlc_then_client() {
        let c = |s: &str| ClientId::new(s).expect("valid");
        let h = Hlc::new(5, 0).expect("fits");
        let a = Stamp::new(h, c("a"));
        let b = Stamp::new(h, c("b"));
        assert!(a < b);
        let later = Stamp::new(Hlc::new(5, 1).expect("fits"), c("a"));
        assert!(b < later);
        let json = serde_json::to_string(&a).expect("serialize");
        assert_eq!(json, "\"0000000000050000@a\"");
        assert_eq!(serde_json::from_str::<Stamp>(&json).expect("parse"), a);
        assert!(serde_json::from_str::<Stamp>("\"0000000000050000\"").is_err());
        assert!(serde_json::from_str::<Stamp>("\"0000000000050000@bad id\"").is_err());
    }
}
