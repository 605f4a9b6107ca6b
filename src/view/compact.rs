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
        parse_uuid(s).map_or_else(|| Id::Text(s.into()), |v| Id::Uuid(v.to_be_bytes()))
    }

    /// The text, written into `buf` for a UUID.
    pub(super) fn as_str<'a>(&'a self, buf: &'a mut [u8; 36]) -> &'a str {
        match self {
            Id::Text(s) => s,
            Id::Uuid(bytes) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut v = u128::from_be_bytes(*bytes);
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

/// A currency code, interned: a process has a handful, and every amount the view holds
/// names one (2 bytes instead of a 24-byte string and its heap block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Currency(u16);

/// The interned codes (an index is a [`Currency`]) and their indexes by code. Past 65,536
/// distinct codes (never, for real input) a code is not interned: [`Amount::Text`] keeps the
/// money as it came.
#[derive(Default)]
struct Currencies {
    codes: Vec<Box<str>>,
    index: std::collections::HashMap<Box<str>, u16>,
}

static CURRENCIES: std::sync::LazyLock<std::sync::Mutex<Currencies>> =
    std::sync::LazyLock::new(Default::default);

fn intern(code: &str) -> Option<Currency> {
    let mut table = CURRENCIES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(&i) = table.index.get(code) {
        return Some(Currency(i));
    }
    let i = u16::try_from(table.codes.len()).ok()?;
    table.codes.push(code.into());
    table.index.insert(code.into(), i);
    Some(Currency(i))
}

fn currency_code(c: Currency) -> String {
    let table = CURRENCIES.lock().unwrap_or_else(|p| p.into_inner());
    table
        .codes
        .get(usize::from(c.0))
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// [`Money`] as the view keeps it: 24 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Amount {
    /// The usual case: an interned currency.
    Interned {
        cent_amount: i64,
        fraction_digits: Option<u32>,
        currency: Currency,
    },
    /// The interning table is full (65,536 distinct codes): the money as it came.
    Text(Box<Money>),
}

impl From<&Money> for Amount {
    fn from(m: &Money) -> Self {
        match intern(&m.currency_code) {
            Some(currency) => Amount::Interned {
                cent_amount: m.cent_amount,
                fraction_digits: m.fraction_digits,
                currency,
            },
            None => Amount::Text(Box::new(m.clone())),
        }
    }
}

impl Amount {
    pub(super) fn to_money(&self) -> Money {
        match self {
            Amount::Interned {
                cent_amount,
                fraction_digits,
                currency,
            } => Money {
                currency_code: currency_code(*currency),
                cent_amount: *cent_amount,
                fraction_digits: *fraction_digits,
            },
            Amount::Text(m) => (**m).clone(),
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
