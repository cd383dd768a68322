//! The long-term archive: evidence records and violations as Parquet files
//! partitioned by date (`<dir>/evidence/date=YYYY-MM-DD/part-N.parquet`,
//! `<dir>/violations/date=…/part-N.parquet`), for retention over years and
//! for `vigil query`, `vigil verify` and `vigil report`.
//!
//! Every field of an evidence record is a column, so the chain's hashes
//! cover exactly what is stored: change any cell and `verify` names the
//! record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::{ArrayWriter, ReaderBuilder};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::evidence::EvidenceRecord;
use crate::violation::Violation;

/// The tables of an archive.
pub const EVIDENCE: &str = "evidence";
pub const VIOLATIONS: &str = "violations";

fn text_list(name: &str) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), false)
}

/// The Parquet schema of evidence records (field order = the record's).
pub fn evidence_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let o = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        s("evidence_id"),
        s("deploy_id"),
        s("service"),
        s("environment"),
        Field::new("event_time", DataType::Int64, false),
        s("status"),
        s("commit_sha"),
        o("artifact_digest"),
        s("deployer"),
        Field::new("automated", DataType::Boolean, false),
        o("change_id"),
        o("change_approver"),
        Field::new("change_approved_at", DataType::Int64, true),
        o("change_type"),
        o("pull_request"),
        o("pr_author"),
        o("merged_by"),
        text_list("reviewers"),
        text_list("ci_runs"),
        o("access_grant"),
        s("source"),
        text_list("outcomes"),
        text_list("violations"),
        Field::new("compliant", DataType::Boolean, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("sequence", DataType::Int64, false),
        s("prev_hash"),
        s("hash"),
    ]))
}

/// The Parquet schema of violations.
pub fn violation_schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("id"),
        s("control_id"),
        s("control_version"),
        s("severity"),
        s("title"),
        s("service"),
        s("subject"),
        Field::new("event_time", DataType::Int64, false),
        Field::new("detected_at", DataType::Int64, false),
        Field::new("late", DataType::Boolean, false),
        s("message"),
        text_list("evidence"),
        text_list("frameworks"),
        s("status"),
    ]))
}

/// Appends `evidence` and `violations` to the archive in `dir`, one new
/// file per table and date; returns the files written.
pub fn write(dir: &Path, evidence: &[EvidenceRecord], violations: &[Violation]) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = write_table(dir, EVIDENCE, evidence_schema(), evidence, |e| e.event_time)?;
    written.extend(write_table(dir, VIOLATIONS, violation_schema(), violations, |v| v.event_time)?);
    Ok(written)
}

fn write_table<T: Serialize>(
    dir: &Path,
    table: &str,
    schema: SchemaRef,
    rows: &[T],
    time: impl Fn(&T) -> i64,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut by_date: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for row in rows {
        let date = chrono::DateTime::from_timestamp_millis(time(row))
            .map_or_else(|| "unknown".to_string(), |t| t.format("%Y-%m-%d").to_string());
        by_date.entry(date).or_default().push(row);
    }
    let mut written = Vec::new();
    for (date, rows) in by_date {
        let folder = dir.join(table).join(format!("date={date}"));
        std::fs::create_dir_all(&folder).map_err(|e| anyhow::anyhow!("{}: {e}", folder.display()))?;
        let n = std::fs::read_dir(&folder)?.count();
        let path = folder.join(format!("part-{n:05}.parquet"));
        let mut decoder = ReaderBuilder::new(schema.clone()).build_decoder()?;
        decoder.serialize(&rows)?;
        let file = std::fs::File::create(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None)?;
        while let Some(batch) = decoder.flush()? {
            writer.write(&batch)?;
        }
        writer.close()?;
        written.push(path);
    }
    Ok(written)
}

/// A row read back, with where it was: file and row number.
pub struct Located<T> {
    pub file: PathBuf,
    pub row: usize,
    pub value: Result<T, String>,
}

/// Every row of `table` in the archive, file by file (sorted by path).
pub fn read<T: DeserializeOwned>(dir: &Path, table: &str) -> anyhow::Result<Vec<Located<T>>> {
    let mut files = Vec::new();
    collect_parquet(&dir.join(table), &mut files)?;
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let open = std::fs::File::open(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(open)
            .map_err(|e| anyhow::anyhow!("{}: not a readable Parquet file: {e}", file.display()))?
            .build()?;
        let mut row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            for value in rows_of::<T>(&batch)? {
                out.push(Located { file: file.clone(), row, value });
                row += 1;
            }
        }
    }
    Ok(out)
}

fn rows_of<T: DeserializeOwned>(batch: &RecordBatch) -> anyhow::Result<Vec<Result<T, String>>> {
    let mut writer = ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let values: Vec<serde_json::Value> = serde_json::from_slice(&bytes)?;
    Ok(values.into_iter().map(|v| serde_json::from_value(v).map_err(|e| e.to_string())).collect())
}

fn collect_parquet(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_parquet(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}
