//! `vigil check`: the config and every control planned against the
//! schemas, without a broker; with `--connect`, whether the brokers accept
//! Vigil as configured.

use std::path::PathBuf;

use super::sources;
use crate::config::Config;
use crate::controls::ControlSet;
use crate::schema::Catalog;

/// `vigil check`: every problem, each naming its file; exit 1 if any.
pub(super) async fn check(
    config_path: Option<PathBuf>,
    queries: Option<PathBuf>,
    connect: bool,
) -> anyhow::Result<i32> {
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(1);
            }
        },
        None => None,
    };
    let dir = queries.as_ref().or(config.as_ref().and_then(|c| c.controls_dir.as_ref()));
    let sources = match sources(dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(1);
        }
    };
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let identities = config.as_ref().map(|c| c.identities.clone()).unwrap_or_default();
    // The evidence query is planned with the controls when Vigil runs.
    let mut planned = sources.clone();
    if !planned.iter().any(|s| s.sql.contains("-- record: evidence")) {
        planned.push(crate::controls::builtin_evidence());
    }
    let errors = ControlSet::check(&planned, &catalog, &identities).await;
    for e in &errors {
        eprintln!("error: {e}");
    }
    let what = dir.map_or("the built-in catalogue".to_string(), |d| d.display().to_string());
    let mut unreachable = false;
    if let (true, Some(config)) = (connect, &config) {
        let probe = config.clone();
        let problems = tokio::task::spawn_blocking(move || {
            crate::source::check_connection(&probe, std::time::Duration::from_secs(10))
        })
        .await?;
        for p in &problems {
            eprintln!("error: {p}");
        }
        unreachable = !problems.is_empty();
        if unreachable {
            eprintln!("check: the brokers {} do not accept Vigil as configured", config.bootstrap_servers);
        } else {
            println!(
                "check: {} accepts Vigil: its topics are visible and its group usable (write access is seen at the first publish)",
                config.bootstrap_servers
            );
        }
    }
    if unreachable {
        Ok(1)
    } else if errors.is_empty() {
        let config = config_path.map(|p| format!(" and {}", p.display())).unwrap_or_default();
        println!("check: {} controls in {what}{config} and the evidence query are valid", sources.len());
        Ok(0)
    } else {
        eprintln!("check: {} of {} controls in {what} have errors", errors.len(), sources.len());
        Ok(1)
    }
}
