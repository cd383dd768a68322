//! Where control SQL comes from: a directory of `.sql` files, or the
//! catalogue compiled into the binary (the files in `queries/`).

use std::path::Path;

/// A control file's name and text.
#[derive(Clone, Debug)]
pub struct ControlSource {
    /// Shown in errors: the path it was read from, or `queries/<name>` for
    /// the built-in catalogue.
    pub file: String,
    pub sql: String,
}

/// The shipped catalogue.
pub fn builtin_sources() -> Vec<ControlSource> {
    let files: &[(&str, &str)] = &[
        ("queries/ac-01.sql", include_str!("../../queries/ac-01.sql")),
        ("queries/ac-02.sql", include_str!("../../queries/ac-02.sql")),
        ("queries/ac-03.sql", include_str!("../../queries/ac-03.sql")),
        ("queries/aud-01.sql", include_str!("../../queries/aud-01.sql")),
        ("queries/cm-01.sql", include_str!("../../queries/cm-01.sql")),
        ("queries/cm-02.sql", include_str!("../../queries/cm-02.sql")),
        ("queries/cm-03.sql", include_str!("../../queries/cm-03.sql")),
        ("queries/cm-04.sql", include_str!("../../queries/cm-04.sql")),
        ("queries/int-01.sql", include_str!("../../queries/int-01.sql")),
        ("queries/sec-01.sql", include_str!("../../queries/sec-01.sql")),
        ("queries/sod-01.sql", include_str!("../../queries/sod-01.sql")),
        ("queries/sod-02.sql", include_str!("../../queries/sod-02.sql")),
        ("queries/tst-01.sql", include_str!("../../queries/tst-01.sql")),
    ];
    files.iter().map(|(file, sql)| ControlSource { file: file.to_string(), sql: sql.to_string() }).collect()
}

/// The built-in evidence query (`-- record: evidence`), planned after the
/// controls so that it sees their decisions.
pub fn builtin_evidence() -> ControlSource {
    ControlSource {
        file: "queries/evidence/deploy.sql".into(),
        sql: include_str!("../../queries/evidence/deploy.sql").into(),
    }
}

/// Every `*.sql` file in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<ControlSource>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!("{}: {e}; point --queries (or controls.dir) at the directory of .sql controls", dir.display())
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{}: no .sql controls found", dir.display()));
    }
    paths
        .into_iter()
        .map(|path| {
            let sql = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(ControlSource { file: path.display().to_string(), sql })
        })
        .collect()
}
