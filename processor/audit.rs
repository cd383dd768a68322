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
