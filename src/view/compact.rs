//! Compact forms of ids and money for the stream view, which holds every payment and order a
//! replay has seen: a UUID id in 16 bytes instead of a 36-byte heap string, a currency code
//! inline instead of on the heap. Each turns back into exactly the text it came from, and ids
//! order exactly as their text does, so nothing the rules see changes.

use std::cmp::Ordering;
use std::fmt;

use crate::model::{Line, Money, TaxedPrice};

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

/// What an order snapshot says that no message changes, packed into one byte string: the
/// order number (its length plus one, then its text; 0 for none), then per line a flag byte,
/// the id (16 bytes for a UUID, else its length and text), the quantity, the total price's
/// cents and, when taxed and different, the gross cents (varints), and — only when they differ
/// from the order's — the currency code and fraction digits. A line of the usual kind takes 21
/// bytes. Orders do not change their lines (Order Edits aside), so the view keeps them as the
/// snapshot listed them.
#[derive(Debug, Default)]
pub(super) struct PackedOrder(Box<[u8]>);

const CUSTOM: u8 = 1;
const UUID_ID: u8 = 2;
const TAXED: u8 = 4;
const OWN_UNIT: u8 = 8;
/// Taxed, with the gross equal to the total price (prices that include the tax).
const GROSS_IS_TOTAL: u8 = 16;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_cents(out: &mut Vec<u8>, v: i64) {
    // Zigzag: small negative amounts stay small.
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_text(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// The money's unit: its currency and fraction digits.
fn same_unit(a: &Money, b: &Money) -> bool {
    a.currency_code == b.currency_code && a.fraction_digits == b.fraction_digits
}

fn pack_line(out: &mut Vec<u8>, line: &Line, custom: bool, unit: &Money) {
    let uuid = parse_uuid(&line.id);
    let gross = line.taxed_price.as_ref().map(|t| &t.total_gross);
    let gross_is_total = gross == Some(&line.total_price);
    let own_unit =
        !same_unit(&line.total_price, unit) || gross.is_some_and(|g| !same_unit(g, unit));
    let flags = [
        (custom, CUSTOM),
        (uuid.is_some(), UUID_ID),
        (gross.is_some(), TAXED),
        (own_unit, OWN_UNIT),
        (gross_is_total, GROSS_IS_TOTAL),
    ]
    .iter()
    .fold(0, |f, &(on, bit)| if on { f | bit } else { f });
    let gross = gross.filter(|_| !gross_is_total);
    out.push(flags);
    match uuid {
        Some(bytes) => out.extend_from_slice(&bytes),
        None => put_text(out, &line.id),
    }
    put_varint(out, line.quantity);
    for m in std::iter::once(&line.total_price).chain(gross) {
        put_cents(out, m.cent_amount);
        if own_unit {
            put_text(out, &m.currency_code);
            put_varint(out, m.fraction_digits.map_or(0, |d| u64::from(d) + 1));
        }
    }
}

/// Reads what [`PackedOrder::new`] wrote; `None` only if the bytes were cut short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn cents(&mut self) -> Option<i64> {
        let z = self.varint()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn text(&mut self) -> Option<String> {
        let n = usize::try_from(self.varint()?).ok()?;
        String::from_utf8(self.bytes(n)?.to_vec()).ok()
    }

    fn money(&mut self, own_unit: bool, unit: &Money) -> Option<Money> {
        let cent_amount = self.cents()?;
        if !own_unit {
            return Some(Money {
                cent_amount,
                ..unit.clone()
            });
        }
        let currency_code = self.text()?;
        let digits = self.varint()?;
        Some(Money {
            currency_code,
            cent_amount,
            fraction_digits: digits.checked_sub(1).and_then(|d| u32::try_from(d).ok()),
        })
    }

    /// One line, and whether it is a custom line.
    fn line(&mut self, unit: &Money) -> Option<(Line, bool)> {
        let flags = self.byte()?;
        let id = if flags & UUID_ID != 0 {
            Id::Uuid(self.bytes(16)?.try_into().ok()?).to_text()
        } else {
            self.text()?
        };
        let quantity = self.varint()?;
        let own_unit = flags & OWN_UNIT != 0;
        let total_price = self.money(own_unit, unit)?;
        let taxed_price = match (flags & TAXED != 0, flags & GROSS_IS_TOTAL != 0) {
            (false, _) => None,
            (true, true) => Some(total_price.clone()),
            (true, false) => Some(self.money(own_unit, unit)?),
        }
        .map(|total_gross| TaxedPrice { total_gross });
        let line = Line {
            id,
            quantity,
            total_price,
            taxed_price,
        };
        Some((line, flags & CUSTOM != 0))
    }
}

impl PackedOrder {
    /// Packs the order number and the lines; `unit` is the order's total price, whose
    /// currency and fraction digits the lines share.
    pub(super) fn new(
        order_number: Option<&str>,
        lines: &[Line],
        custom: &[Line],
        unit: &Money,
    ) -> Self {
        if order_number.is_none() && lines.is_empty() && custom.is_empty() {
            return Self::default();
        }
        let mut out = Vec::new();
        match order_number {
            Some(n) => {
                put_varint(&mut out, n.len() as u64 + 1);
                out.extend_from_slice(n.as_bytes());
            }
            None => out.push(0),
        }
        for (line, is_custom) in lines
            .iter()
            .map(|l| (l, false))
            .chain(custom.iter().map(|l| (l, true)))
        {
            pack_line(&mut out, line, is_custom, unit);
        }
        Self(out.into_boxed_slice())
    }

    /// The order number, and a reader at the first line.
    fn split(&self) -> (Option<&str>, Reader<'_>) {
        let mut r = Reader(&self.0);
        // The view wrote these bytes itself: a short read cannot happen; nothing follows if
        // it does.
        let number = match r.varint().and_then(|n| usize::try_from(n).ok()) {
            None | Some(0) => None,
            Some(n) => r.bytes(n - 1).and_then(|b| std::str::from_utf8(b).ok()),
        };
        (number, r)
    }

    /// The order number.
    pub(super) fn order_number(&self) -> Option<&str> {
        self.split().0
    }

    /// The lines and the custom lines, in their order; `unit` as given to [`PackedOrder::new`].
    pub(super) fn lines(&self, unit: &Money) -> (Vec<Line>, Vec<Line>) {
        let (mut lines, mut custom) = (Vec::new(), Vec::new());
        let mut r = self.split().1;
        while !r.0.is_empty() {
            let Some((line, is_custom)) = r.line(unit) else {
                break;
            };
            if is_custom {
                custom.push(line);
            } else {
                lines.push(line);
            }
        }
        (lines, custom)
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

    #[test]
    fn lines_unpack_into_what_was_packed() {
        let eur = |cents, digits| Money {
            currency_code: "EUR".into(),
            cent_amount: cents,
            fraction_digits: digits,
        };
        let line = |id: &str, quantity, total: Money, gross: Option<Money>| Line {
            id: id.into(),
            quantity,
            total_price: total,
            taxed_price: gross.map(|total_gross| TaxedPrice { total_gross }),
        };
        let unit = eur(17465, Some(2));
        let lines = vec![
            line(
                "3a6a164f-56f2-4df8-b025-aafecb0f8251",
                1,
                eur(10916, Some(2)),
                Some(eur(12990, Some(2))),
            ),
            line("line-2", 300, eur(-5, Some(2)), None),
            line(
                "fd9b4c96-4d17-4a13-aa09-3586fca08896",
                u64::MAX,
                Money {
                    currency_code: "XBT1".into(),
                    cent_amount: i64::MIN,
                    fraction_digits: Some(8),
                },
                Some(eur(i64::MAX, None)),
            ),
        ];
        let custom = vec![
            line("c", 1, eur(0, Some(2)), None),
            line("ü", 2, eur(990, Some(2)), Some(eur(990, Some(2)))),
        ];
        for number in [None, Some(""), Some("100052317")] {
            let packed = PackedOrder::new(number, &lines, &custom, &unit);
            assert_eq!(packed.order_number(), number);
            assert_eq!(packed.lines(&unit), (lines.clone(), custom.clone()));
        }
        // The usual line: one flag byte, the id, the quantity and its amounts (the gross only
        // when it is not the total).
        let one = PackedOrder::new(None, &lines[..1], &[], &unit);
        assert_eq!(one.0.len(), 1 + (1 + 16 + 1 + 3 + 3));
        let gross_is_total = PackedOrder::new(None, &custom[1..], &[], &unit);
        assert_eq!(gross_is_total.0.len(), 1 + (1 + 1 + 2 + 1 + 2));
        let empty = PackedOrder::new(None, &[], &[], &unit);
        assert_eq!((empty.0.len(), empty.order_number()), (0, None));
        assert_eq!(empty.lines(&unit), (Vec::new(), Vec::new()));
    }
}
