//! Avro object container files read block by block, without apache-avro's
//! values: when a file's schema is the canonical one (as files written
//! with `schemas/` are) and its codec is `null` or `deflate`, each block's
//! datums are told apart by stepping over them and handed on as they are —
//! bare canonical datums, which the decoder reads straight into columns.
//! Other files are read through apache-avro (`input`).
//!
//! The format: `Obj\x01`, a metadata map (`avro.schema`, `avro.codec`), a
//! 16-byte sync marker; then blocks of a datum count, a byte size, the
//! (compressed) datums and the sync marker again.

use std::io::{BufReader, Read};

use anyhow::{bail, Context};
use apache_avro::Schema as AvroSchema;

use crate::decode::Stepper;
use crate::schema::EventSchema;

pub struct Blocks {
    file: BufReader<std::fs::File>,
    path: String,
    sync: [u8; 16],
    deflate: bool,
    stepper: Stepper,
    /// The block being read, and where its next datum starts.
    block: Vec<u8>,
    at: usize,
    /// Datums left in the block.
    left: i64,
    /// Byte offset in the file of the next block (for errors).
    offset: u64,
}

impl Blocks {
    /// `None` when the file is not one this reads (another schema or
    /// codec): apache-avro reads it instead. Errors are files that are not
    /// Avro container files at all.
    pub fn open(path: &std::path::Path, canonical: &EventSchema) -> anyhow::Result<Option<Blocks>> {
        let name = path.display().to_string();
        let mut file =
            BufReader::with_capacity(1 << 20, std::fs::File::open(path).with_context(|| format!("opening {name}"))?);
        let mut magic = [0u8; 4];
        file.read_exact(&mut magic).with_context(|| format!("{name}: not an Avro container file"))?;
        if &magic != b"Obj\x01" {
            bail!("{name}: not an Avro container file (it does not start with Obj\\x01)");
        }
        let (mut schema, mut codec) = (None, None);
        let mut offset = 4;
        loop {
            let mut count =
                long(&mut file, &mut offset)?.with_context(|| format!("{name}: the header is cut short"))?;
            if count == 0 {
                break;
            }
            if count < 0 {
                count = -count;
                long(&mut file, &mut offset)?; // the block's size in bytes
            }
            for _ in 0..count {
                let key = bytes(&mut file, &mut offset).with_context(|| format!("{name}: bad header"))?;
                let value = bytes(&mut file, &mut offset).with_context(|| format!("{name}: bad header"))?;
                match key.as_slice() {
                    b"avro.schema" => schema = Some(value),
                    b"avro.codec" => codec = Some(value),
                    _ => {}
                }
            }
        }
        let mut sync = [0u8; 16];
        file.read_exact(&mut sync).with_context(|| format!("{name}: the header is cut short"))?;
        offset += 16;
        let deflate = match codec.as_deref() {
            None | Some(b"null") => false,
            Some(b"deflate") => true,
            Some(_) => return Ok(None),
        };
        let Some(writer) = schema.and_then(|s| AvroSchema::parse_str(std::str::from_utf8(&s).ok()?).ok()) else {
            return Ok(None);
        };
        if writer.canonical_form() != canonical.avro.canonical_form() {
            return Ok(None);
        }
        let Some(stepper) = Stepper::compile(&writer) else { return Ok(None) };
        Ok(Some(Blocks { file, path: name, sync, deflate, stepper, block: Vec::new(), at: 0, left: 0, offset }))
    }

    /// The next datum, `None` at the end of the file.
    pub fn next_datum(&mut self) -> anyhow::Result<Option<&[u8]>> {
        while self.left == 0 {
            if !self.next_block()? {
                return Ok(None);
            }
        }
        let rest = &self.block[self.at..];
        let Some(len) = self.stepper.len(rest) else {
            bail!("{}: a datum in the block at byte {} is malformed or cut short", self.path, self.offset);
        };
        let datum = &self.block[self.at..self.at + len];
        self.at += len;
        self.left -= 1;
        Ok(Some(datum))
    }

    /// Reads the next block; `false` at the end of the file.
    fn next_block(&mut self) -> anyhow::Result<bool> {
        let at = self.offset;
        let mut offset = self.offset;
        let Some(count) = long(&mut self.file, &mut offset)? else { return Ok(false) };
        let bad = |what: &str| anyhow::anyhow!("{}: the block at byte {at} {what}", self.path);
        let size = long(&mut self.file, &mut offset)?.ok_or_else(|| bad("is cut short"))?;
        let (Ok(count), Ok(size)) = (usize::try_from(count), usize::try_from(size)) else {
            return Err(bad("has a negative count or size"));
        };
        let mut data = vec![0u8; size];
        self.file.read_exact(&mut data).map_err(|_| bad("is cut short"))?;
        let mut sync = [0u8; 16];
        self.file.read_exact(&mut sync).map_err(|_| bad("is cut short"))?;
        if sync != self.sync {
            return Err(bad("does not end in the file's sync marker"));
        }
        self.offset = offset + (size + 16) as u64;
        self.block = if self.deflate {
            miniz_oxide::inflate::decompress_to_vec(&data).map_err(|e| bad(&format!("does not inflate: {e:?}")))?
        } else {
            data
        };
        self.at = 0;
        self.left = count as i64;
        Ok(true)
    }
}

/// A zig-zag varint long; `None` at a clean end of the file.
fn long(r: &mut impl Read, offset: &mut u64) -> anyhow::Result<Option<i64>> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        if r.read(&mut byte)? == 0 {
            if i == 0 {
                return Ok(None);
            }
            bail!("a number is cut short");
        }
        *offset += 1;
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some((value >> 1) as i64 ^ -((value & 1) as i64)));
        }
    }
    bail!("a number is longer than 10 bytes")
}

fn bytes(r: &mut impl Read, offset: &mut u64) -> anyhow::Result<Vec<u8>> {
    let len = long(r, offset)?.context("cut short")?;
    let len = usize::try_from(len).context("negative length")?;
    let mut out = vec![0u8; len];
    r.read_exact(&mut out)?;
    *offset += len as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, to_avro, GenConfig};
    use crate::schema::{Catalog, Topic};
    use apache_avro::{Codec, DeflateSettings, Writer};

    /// Generated ci events as bare canonical datums.
    fn datums(catalog: &Catalog) -> Vec<Vec<u8>> {
        let (stream, _) = generate(&GenConfig::new(3_000, 2, 1_795_000_000_000));
        let schema = catalog.event(Topic::Ci);
        let framed = stream.iter().filter(|e| e.topic == Topic::Ci).map(|e| to_avro(schema, &e.fields).unwrap());
        framed.map(|f| f[5..].to_vec()).collect()
    }

    /// `datums` in a container file written by apache-avro, small blocks.
    fn container(schema: &AvroSchema, datums: &[Vec<u8>], codec: Codec) -> Vec<u8> {
        let mut writer = Writer::builder().schema(schema).writer(Vec::new()).codec(codec).block_size(4096).build();
        for d in datums {
            let value = apache_avro::from_avro_datum(schema, &mut d.as_slice(), None).unwrap();
            writer.append(value).unwrap();
        }
        writer.into_inner().unwrap()
    }

    fn read_all(path: &std::path::Path, catalog: &Catalog) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
        let Some(mut blocks) = Blocks::open(path, catalog.event(Topic::Ci))? else { return Ok(None) };
        let mut out = Vec::new();
        while let Some(d) = blocks.next_datum()? {
            out.push(d.to_vec());
        }
        Ok(Some(out))
    }

    #[test]
    fn a_canonical_file_gives_back_the_datums_written() {
        let catalog = Catalog::builtin().unwrap();
        let datums = datums(&catalog);
        let dir = tempfile::tempdir().unwrap();
        for codec in [Codec::Null, Codec::Deflate(DeflateSettings::default())] {
            let path = dir.path().join("ci.avro");
            std::fs::write(&path, container(&catalog.event(Topic::Ci).avro, &datums, codec)).unwrap();
            let read = read_all(&path, &catalog).unwrap().expect("a canonical file is read block by block");
            assert!(read.len() > 500, "several blocks: {}", read.len());
            assert!(read == datums, "{codec:?}: the same datums, in order");
        }
    }

    #[test]
    fn another_schema_is_left_to_apache_avro() {
        let catalog = Catalog::builtin().unwrap();
        let other =
            AvroSchema::parse_str(r#"{"type":"record","name":"x","fields":[{"name":"a","type":"long"}]}"#).unwrap();
        let mut writer = Writer::new(&other, Vec::new());
        writer
            .append(apache_avro::types::Value::Record(vec![("a".into(), apache_avro::types::Value::Long(1))]))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.avro");
        std::fs::write(&path, writer.into_inner().unwrap()).unwrap();
        assert!(read_all(&path, &catalog).unwrap().is_none());
    }

    #[test]
    fn a_damaged_block_is_an_error_naming_the_file_and_byte() {
        let catalog = Catalog::builtin().unwrap();
        let mut bytes = container(&catalog.event(Topic::Ci).avro, &datums(&catalog), Codec::Null);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // the last block's sync marker
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.avro");
        std::fs::write(&path, bytes).unwrap();
        let error = read_all(&path, &catalog).unwrap_err().to_string();
        assert!(error.contains("ci.avro: the block at byte "), "{error}");
        assert!(error.contains("sync marker"), "{error}");
    }
}
