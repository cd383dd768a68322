//! The auditor's commands over an archive (or the evidence topic):
//! `vigil verify`, `vigil query`.

use std::path::Path;
use std::time::Duration;

use crate::archive::{self, EVIDENCE, VIOLATIONS};
use crate::evidence::EvidenceRecord;
use crate::verify::{check, Report};

/// Checks the evidence chains of an archive directory.
pub fn verify_archive(dir: &Path) -> anyhow::Result<Report> {
    if !dir.join(EVIDENCE).is_dir() {
        anyhow::bail!(
            "{}: no {EVIDENCE}/ directory; is this an archive (vigil demo --archive DIR writes one)?",
            dir.display()
        );
    }
    let rows = archive::read::<EvidenceRecord>(dir, EVIDENCE)?;
    Ok(check(rows.into_iter().map(|r| (format!("{}:{}", r.file.display(), r.row), r.value)).collect()))
}

/// Checks the evidence chains of the evidence topic.
pub fn verify_topic(bootstrap: &str, topic: &str) -> anyhow::Result<Report> {
    let records = crate::embedded::read_all(bootstrap, topic, Duration::from_secs(60))?;
    Ok(check(
        records
            .into_iter()
            .map(|r| {
                let record = serde_json::from_slice::<EvidenceRecord>(r.payload.as_deref().unwrap_or_default())
                    .map_err(|e| e.to_string());
                (format!("{topic}/{}/{}", r.partition, r.offset), record)
            })
            .collect(),
    ))
}

/// Runs `sql` over the archive's tables `evidence` and `violations`;
/// returns the result as a printed table.
pub async fn query(dir: &Path, sql: &str) -> anyhow::Result<String> {
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    let ctx = SessionContext::new();
    for table in [EVIDENCE, VIOLATIONS] {
        let path = dir.join(table);
        if path.is_dir() {
            let options = ParquetReadOptions::default()
                .table_partition_cols(vec![("date".to_string(), datafusion::arrow::datatypes::DataType::Utf8)]);
            ctx.register_parquet(table, path.to_string_lossy().as_ref(), options).await?;
        }
    }
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

/// Appends what is new on the evidence and violations topics to the archive
/// in `dir`: where each topic was read up to is kept in
/// `dir/_offsets.json`, so running it again (from cron, say) archives each
/// record once. Returns (evidence records, violations) archived.
pub fn archive_topics(
    bootstrap: &str,
    properties: &std::collections::BTreeMap<String, String>,
    evidence_topic: &str,
    violations_topic: &str,
    dir: &Path,
) -> anyhow::Result<(usize, usize)> {
    use std::collections::BTreeMap;
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let state_path = dir.join("_offsets.json");
    let mut state: BTreeMap<String, BTreeMap<i32, i64>> = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", state_path.display()))?,
        Err(_) => BTreeMap::new(),
    };
    let mut read = |topic: &str| -> anyhow::Result<Vec<crate::embedded::ReadRecord>> {
        let from = state.get(topic).cloned().unwrap_or_default();
        let records = crate::embedded::read_from(bootstrap, properties, topic, &from, Duration::from_secs(60))?;
        let next = state.entry(topic.to_string()).or_default();
        for r in &records {
            let n = next.entry(r.partition).or_insert(0);
            *n = (*n).max(r.offset + 1);
        }
        Ok(records)
    };
    let evidence = read(evidence_topic)?
        .iter()
        .map(|r| {
            serde_json::from_slice::<EvidenceRecord>(r.payload.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("{evidence_topic}/{}/{}: {e}", r.partition, r.offset))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let catalog = crate::schema::Catalog::builtin().map_err(anyhow::Error::msg)?;
    let violations = read(violations_topic)?
        .iter()
        .map(|r| {
            crate::violation::Violation::from_confluent_avro(
                &catalog.violation,
                r.payload.as_deref().unwrap_or_default(),
            )
            .map_err(|e| anyhow::anyhow!("{violations_topic}/{}/{}: {e}", r.partition, r.offset))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    archive::write(dir, &evidence, &violations)?;
    // The files are written before the offsets: a crash in between archives
    // a record twice (verify names the repeat), never loses one.
    std::fs::write(&state_path, serde_json::to_vec_pretty(&state)?)?;
    Ok((evidence.len(), violations.len()))
}
