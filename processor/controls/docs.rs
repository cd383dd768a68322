//! The controls reference (docs/controls.md), rendered from the headers.

use super::{meta, ControlSource};

/// Markdown for every control in `sources`, in the order given.
pub fn reference(sources: &[ControlSource]) -> Result<String, String> {
    let mut metas = Vec::new();
    for source in sources {
        let m = meta::parse(&source.sql).map_err(|(line, e)| format!("{}:{line}: {e}", source.file))?;
        metas.push((m, source.file.as_str()));
    }
    let mut out = String::from(
        "# Controls reference\n\n\
         Generated from the headers of the SQL files in `queries/` by `vigil docs --out docs/controls.md`;\n\
         a test fails when it is out of date. A look-back control decides when the event-time watermark\n\
         passes the trigger's time + grace; an absence control when it passes the trigger's time + deadline.\n\n\
         | id | title | severity | kind | domain |\n|---|---|---|---|---|\n",
    );
    for (m, _) in &metas {
        out.push_str(&format!(
            "| [{id}](#{anchor}) | {title} | {severity} | {kind} | {domain} |\n",
            id = m.id,
            anchor = m.id.to_lowercase(),
            title = m.title,
            severity = m.severity,
            kind = m.kind(),
            domain = m.domain.as_deref().unwrap_or("—"),
        ));
    }
    for (m, file) in &metas {
        let wait = match m.deadline {
            Some(d) => format!("deadline {}", humantime(d)),
            None => format!("grace {}", humantime(m.grace)),
        };
        out.push_str(&format!(
            "\n## {}\n\n**{}** — severity {}, {} control (`{file}`)\n\n",
            m.id,
            m.title,
            m.severity,
            m.kind()
        ));
        out.push_str(&format!("- SOX ITGC domain: {}\n", m.domain.as_deref().unwrap_or("—")));
        out.push_str(&format!("- COSO: {}\n", m.coso.as_deref().unwrap_or("—")));
        out.push_str(&format!(
            "- Trigger: `{}` events{}; decided at {wait}, looking back {}\n",
            m.trigger,
            m.filter.as_deref().map(|f| format!(" where `{f}`")).unwrap_or_default(),
            humantime(m.lookback),
        ));
        out.push_str(&format!("- Violates: {}\n", m.violates.as_deref().unwrap_or("(not described)")));
        out.push_str(&format!("- Remediation: {}\n", m.remediation.as_deref().unwrap_or("(not described)")));
    }
    Ok(out)
}

fn humantime(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
