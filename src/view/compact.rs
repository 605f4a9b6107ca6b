//! Compact forms of ids and money for the stream view, which holds every payment and order a
//! replay has seen: a UUID id in 16 bytes instead of a 36-byte heap string, a currency code
//! inline instead of on the heap. Each turns back into exactly the text it came from, and ids
//! order exactly as their text does, so nothing the rules see changes.

use std::cmp::Ordering;
use std::fmt;

use crate::model::Money;

/// An id as the view keeps it: a canonical (lowercase, hyphenated) UUID as its 16 bytes
/// (big-endian, so they order as the text does; bytes, not `u128`, whose 16-byte alignment
/// would make the enum 32 bytes), anything else as its text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Id {
    Uuid([u8; 16]),
    Text(Box<str>),
}

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// Where the 32 hex digits of a hyphenated UUID are, most significant first.
const DIGITS: [usize; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28, 29,
    30, 31, 32, 33, 34, 35,
];

/// The value of each byte as a lowercase hex digit; 0xff for anything else.
const HEX_VALUE: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut c = 0;
    while c < 10 {
        t[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        t[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    t
};

/// The 16 bytes of a canonical UUID (lowercase, hyphenated), big-endian.
fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b: &[u8; 36] = s.as_bytes().try_into().ok()?;
    if HYPHENS.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut out = [0u8; 16];
    for (k, byte) in out.iter_mut().enumerate() {
        let hi = HEX_VALUE[usize::from(b[DIGITS[2 * k]])];
        let lo = HEX_VALUE[usize::from(b[DIGITS[2 * k + 1]])];
        if (hi | lo) > 0xf {
            return None;
        }
        *byte = (hi << 4) | lo;
    }
    Some(out)
}

impl Id {
    pub(super) fn new(s: &str) -> Self {
        parse_uuid(s).map_or_else(|| Id::Text(s.into()), Id::Uuid)
    }

    /// The text, as a new `String` (without `fmt` or a UTF-8 check).
    pub(super) fn to_text(&self) -> String {
        match self {
            Id::Text(s) => s.to_string(),
            Id::Uuid(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut s = String::with_capacity(36);
                for (k, byte) in bytes.iter().enumerate() {
                    if matches!(k, 4 | 6 | 8 | 10) {
                        s.push('-');
                    }
                    s.push(char::from(HEX[usize::from(byte >> 4)]));
                    s.push(char::from(HEX[usize::from(byte & 0xf)]));
                }
                s
            }
        }
    }

    /// The text, written into `buf` for a UUID.
    pub(super) fn as_str<'a>(&'a self, buf: &'a mut [u8; 36]) -> &'a str {
        match self {
            Id::Text(s) => s,
            Id::Uuid(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for i in HYPHENS {
                    buf[i] = b'-';
                }
                for (k, byte) in bytes.iter().enumerate() {
                    buf[DIGITS[2 * k]] = HEX[usize::from(byte >> 4)];
                    buf[DIGITS[2 * k + 1]] = HEX[usize::from(byte & 0xf)];
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

/// [`Money`] as the view keeps it: 24 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Amount {
    /// The usual case: a three-character ASCII currency code, inline.
    Code {
        cent_amount: i64,
        fraction_digits: Option<u32>,
        currency: [u8; 3],
    },
    /// Any other currency code: the money as it came.
    Other(Box<Money>),
}

impl From<&Money> for Amount {
    fn from(m: &Money) -> Self {
        match <[u8; 3]>::try_from(m.currency_code.as_bytes()) {
            Ok(currency) if currency.is_ascii() => Amount::Code {
                cent_amount: m.cent_amount,
                fraction_digits: m.fraction_digits,
                currency,
            },
            _ => Amount::Other(Box::new(m.clone())),
        }
    }
}

impl Amount {
    pub(super) fn to_money(&self) -> Money {
        match self {
            Amount::Code {
                cent_amount,
                fraction_digits,
                currency,
            } => Money {
                // ASCII (checked on the way in).
                currency_code: String::from_utf8_lossy(currency).into_owned(),
                cent_amount: *cent_amount,
                fraction_digits: *fraction_digits,
            },
            Amount::Other(m) => (**m).clone(),
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
            assert_eq!(&id.to_text(), t);
        }
        for (a, ia) in texts.iter().zip(&ids) {
            for (b, ib) in texts.iter().zip(&ids) {
                assert_eq!(ia.cmp(ib), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn the_compact_forms_are_small() {
        assert_eq!(std::mem::size_of::<Id>(), 24);
        assert_eq!(std::mem::size_of::<Amount>(), 24);
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
