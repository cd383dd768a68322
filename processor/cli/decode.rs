//! `vigil decode`: what a tool's payload maps to, checked as `vigil run`
//! would check it.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::Config;
use crate::schema::Topic;

/// `vigil decode`: what each payload file maps to; 1 if any cannot be read.
pub(super) fn decode(
    format: crate::decode::Format,
    topic: Topic,
    headers: &[(String, Option<Vec<u8>>)],
    config: Option<PathBuf>,
    files: &[PathBuf],
) -> anyhow::Result<i32> {
    // The same [native] mapping and [decode] bounds `vigil run` applies.
    let (native, limits) = match config {
        Some(path) => {
            let config = Config::load(&path).map_err(anyhow::Error::msg)?;
            let limits = crate::decode::Limits { time: config.time_bounds, max_bytes: config.max_message_bytes };
            (config.native.as_ref().clone(), limits)
        }
        None => (crate::native::NativeConfig::default(), crate::decode::Limits::default()),
    };
    let mut failed = 0;
    for file in files {
        let payload = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        match crate::native::decode_payload(format, topic, &payload, headers, &native, &limits) {
            Ok(decoded) if decoded.lines.is_empty() => match decoded.ignored {
                Some(why) => eprintln!("{}: nothing Vigil uses: {why}", file.display()),
                None => {
                    eprintln!("{}: nothing Vigil uses (a valid payload that maps to no {topic} event)", file.display())
                }
            },
            Ok(decoded) => decoded.lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                failed += 1;
            }
        }
    }
    Ok(i32::from(failed > 0))
}
