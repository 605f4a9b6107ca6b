//! Compact forms of ids and money for the stream view, which holds every payment and order a
//! replay has seen: a UUID id in 16 bytes instead of a 36-byte heap string, a currency code
//! inline instead of on the heap. Each turns back into exactly the text it came from, and ids
//! order exactly as their text does, so nothing the rules see changes.

use std::cmp::Ordering;
use std::fmt;

use crate::model::Money;

/// An id as the view keeps it: a canonical (lowercase, hyphenated) UUID as its 128 bits,
/// anything else as its text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Id {
    Uuid(u128),
    Text(Box<str>),
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The value of a lowercase hex digit.
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn parse_uuid(s: &str) -> Option<u128> {
    let b: &[u8; 36] = s.as_bytes().try_into().ok()?;
    if HYPHENS.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'-' && HYPHENS.contains(&i) {
            continue;
        }
        v = (v << 4) | u128::from(hex(c)?);
    }
    Some(v)
}

impl Id {
    pub(super) fn new(s: &str) -> Self {
        parse_uuid(s).map_or_else(|| Id::Text(s.into()), Id::Uuid)
    }

    /// The text, written into `buf` for a UUID.
    pub(super) fn as_str<'a>(&'a self, buf: &'a mut [u8; 36]) -> &'a str {
        match self {
            Id::Text(s) => s,
            Id::Uuid(v) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut v = *v;
                // Last digit first: 32 nibbles into the 32 non-hyphen slots.
                for i in (0..36).rev() {
                    if HYPHENS.contains(&i) {
                        buf[i] = b'-';
                    } else {
                        buf[i] = HEX[(v & 0xf) as usize];
                        v >>= 4;
                    }
                }
                // Only ASCII hex digits and hyphens were written.
                std::str::from_utf8(buf).unwrap_or_default()
            }
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str(&mut [0; 36]))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}", self = self.to_string())
    }
}

impl Ord for Id {
    /// As the text orders: for two UUIDs their numbers order the same way.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Id::Uuid(a), Id::Uuid(b)) => a.cmp(b),
            _ => self.as_str(&mut [0; 36]).cmp(other.as_str(&mut [0; 36])),
        }
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A currency code: three ASCII letters inline, anything else as text.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Currency {
    Code([u8; 3]),
    Text(Box<str>),
}

/// [`Money`] as the view keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Amount {
    cent_amount: i64,
    currency: Currency,
    fraction_digits: Option<u32>,
}

impl From<&Money> for Amount {
    fn from(m: &Money) -> Self {
        let b = m.currency_code.as_bytes();
        let currency = match b {
            [x, y, z] if b.iter().all(u8::is_ascii_alphabetic) => Currency::Code([*x, *y, *z]),
            _ => Currency::Text(m.currency_code.as_str().into()),
        };
        Self {
            cent_amount: m.cent_amount,
            currency,
            fraction_digits: m.fraction_digits,
        }
    }
}

impl Amount {
    pub(super) fn to_money(&self) -> Money {
        let currency_code = match &self.currency {
            // Letters only (checked on the way in).
            Currency::Code(c) => std::str::from_utf8(c).unwrap_or_default().to_string(),
            Currency::Text(s) => s.to_string(),
        };
        Money {
            currency_code,
            cent_amount: self.cent_amount,
            fraction_digits: self.fraction_digits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_turn_back_into_their_text_and_order_as_text_does() {
        let texts = [
            "8756fff9-5c3b-4d79-9d7f-8f95c941e5b5",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "8756FFF9-5C3B-4D79-9D7F-8F95C941E5B5",
            "8756fff95c3b4d799d7f8f95c941e5b5",
            "8756fff9-5c3b-4d79-9d7f-8f95c941e5b",
            "order-1",
            "",
            "zzz",
            "0",
            "8756fff9_5c3b-4d79-9d7f-8f95c941e5b5",
        ];
        let ids: Vec<Id> = texts.iter().map(|t| Id::new(t)).collect();
        assert!(matches!(ids[0], Id::Uuid(_)));
        assert!(matches!(ids[3], Id::Text(_)), "uppercase stays text");
        for (t, id) in texts.iter().zip(&ids) {
            assert_eq!(&id.to_string(), t);
        }
        for (a, ia) in texts.iter().zip(&ids) {
            for (b, ib) in texts.iter().zip(&ids) {
                assert_eq!(ia.cmp(ib), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn amounts_turn_back_into_their_money() {
        for (code, digits) in [
            ("EUR", Some(2)),
            ("JPY", None),
            ("XBT1", Some(8)),
            ("", None),
        ] {
            let m = Money {
                currency_code: code.into(),
                cent_amount: -12_345,
                fraction_digits: digits,
            };
            assert_eq!(Amount::from(&m).to_money(), m);
        }
    }
}
