//! Reading Avro's binary encoding: varints, strings, and stepping over
//! values, for the fast path's compiled plans (`fast`).

use super::fast::{Op, Skip, Slot};

/// `bytes` as text if they are valid UTF-8. Most are ASCII (ids, names,
/// digests), which one word-wise check settles, at a fraction of the cost
/// of `from_utf8`'s validation of short strings.
fn text(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

pub(super) struct Input<'a> {
    pub(super) rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// A zig-zag varint, as Avro writes int and long.
    fn long(&mut self) -> Option<i64> {
        let mut value: u64 = 0;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        None
    }

    fn int(&mut self) -> Option<i32> {
        i32::try_from(self.long()?).ok()
    }

    fn len(&mut self) -> Option<usize> {
        usize::try_from(self.long()?).ok()
    }

    pub(super) fn value(&mut self, op: &Op) -> Option<Slot<'a>> {
        Some(match op {
            Op::Null => Slot::Null,
            Op::Bool => match self.take(1)?[0] {
                0 => Slot::Bool(false),
                1 => Slot::Bool(true),
                _ => return None,
            },
            Op::Int => Slot::Int(self.int()?),
            Op::Long { int: true } => Slot::Long(self.int()?.into()),
            Op::Long { int: false } => Slot::Long(self.long()?),
            Op::Str => {
                let n = self.len()?;
                Slot::Str(text(self.take(n)?)?)
            }
            Op::Enum(symbols) => Slot::Symbol((*symbols.get(self.len()?)?)?),
            Op::Union(branches) => {
                let branch = branches.get(self.len()?)?;
                return self.value(branch);
            }
            Op::Incompatible => return None,
        })
    }

    pub(super) fn skip(&mut self, skip: &Skip) -> Option<()> {
        match skip {
            Skip::Nothing => {}
            Skip::Bool => {
                self.take(1)?;
            }
            Skip::Varint => {
                self.long()?;
            }
            Skip::Fixed(n) => {
                self.take(*n)?;
            }
            Skip::Bytes => {
                let n = self.len()?;
                self.take(n)?;
            }
            Skip::Array(items) => self.blocks(|input| input.skip(items))?,
            Skip::Map(values) => self.blocks(|input| {
                let n = input.len()?;
                input.take(n)?;
                input.skip(values)
            })?,
            Skip::Record(fields) => {
                for f in fields {
                    self.skip(f)?;
                }
            }
            Skip::Union(branches) => {
                let branch = branches.get(self.len()?)?;
                self.skip(branch)?;
            }
        }
        Some(())
    }

    /// Array and map blocks: a count, then items, until a zero count; a
    /// negative count is followed by the block's size in bytes.
    fn blocks(&mut self, mut item: impl FnMut(&mut Input<'a>) -> Option<()>) -> Option<()> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Some(());
            }
            if count < 0 {
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_read_as_utf8_ascii_or_not() {
        assert_eq!(text(b"dep-000123"), Some("dep-000123"));
        assert_eq!(text("Åsa Öberg".as_bytes()), Some("Åsa Öberg"));
        assert_eq!(text(&[b'a', 0xff]), None);
        assert_eq!(text(&[0xc3]), None);
    }
}
