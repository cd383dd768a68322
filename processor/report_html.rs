//! The HTML of `vigil report`: one self-contained page (inline CSS and SVG,
//! no scripts, nothing fetched), readable offline and printable.

use crate::evidence::EvidenceRecord;
use crate::report::Summary;

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn share(compliant: usize, total: usize) -> String {
    if total == 0 {
        "–".into()
    } else {
        format!("{:.1}%", 100.0 * compliant as f64 / total as f64)
    }
}

/// A horizontal bar chart: one bar per (label, value).
fn bars(title: &str, rows: &[(String, f64, String)], max: f64) -> String {
    let height = 24 * rows.len() + 10;
    let mut svg = format!(
        "<figure><figcaption>{}</figcaption><svg role=\"img\" width=\"640\" height=\"{height}\" viewBox=\"0 0 640 {height}\">",
        esc(title)
    );
    for (i, (label, value, text)) in rows.iter().enumerate() {
        let y = 24 * i + 4;
        let w = if max > 0.0 { (value / max * 420.0).max(1.0) } else { 1.0 };
        svg.push_str(&format!(
            "<text x=\"0\" y=\"{}\" class=\"l\">{}</text><rect x=\"120\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" class=\"b\"/><text x=\"{:.1}\" y=\"{}\" class=\"v\">{}</text>",
            y + 14,
            esc(label),
            126.0 + w,
            y + 14,
            esc(text)
        ));
    }
    svg + "</svg></figure>"
}

/// A column chart of the share of compliant deploys per day.
fn columns(summary: &Summary) -> String {
    let days: Vec<(&String, &(usize, usize))> = summary.deploys_by_day.iter().collect();
    let width = (days.len() * 40).max(200) + 40;
    let mut svg = format!(
        "<figure><figcaption>Share of compliant production deploys per day</figcaption><svg role=\"img\" width=\"{width}\" height=\"200\" viewBox=\"0 0 {width} 200\"><line x1=\"30\" y1=\"160\" x2=\"{width}\" y2=\"160\" class=\"axis\"/><text x=\"0\" y=\"14\" class=\"l\">100%</text><text x=\"0\" y=\"160\" class=\"l\">0%</text>"
    );
    for (i, (day, (total, compliant))) in days.iter().enumerate() {
        let ratio = if *total == 0 { 0.0 } else { *compliant as f64 / *total as f64 };
        let h = ratio * 150.0;
        let x = 36 + 40 * i;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"30\" height=\"{h:.1}\" class=\"b\"><title>{day}: {} of {total}</title></rect><text x=\"{x}\" y=\"176\" class=\"d\">{}</text>",
            160.0 - h,
            compliant,
            esc(day.get(5..).unwrap_or(day))
        ));
    }
    svg + "</svg></figure>"
}

pub fn render(s: &Summary, deploys: &[EvidenceRecord]) -> String {
    let scope = s.service.as_deref().map(|x| format!(" — service {}", esc(x))).unwrap_or_default();
    let mut html = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Vigil audit report {from} to {to}</title><style>{CSS}</style></head><body>\
         <h1>Audit report {from} to {to}{scope}</h1>\
         <section class=\"figures\"><div><b id=\"deploys\">{}</b>production deploys</div><div><b id=\"compliant\">{}</b>compliant</div><div><b id=\"violations\">{}</b>violations</div></section>",
        s.deploys,
        share(s.compliant_deploys, s.deploys),
        s.violations,
        from = esc(&s.from),
        to = esc(&s.to),
    );
    let max = s.violations_by_control.values().copied().max().unwrap_or(0) as f64;
    let rows: Vec<(String, f64, String)> =
        s.violations_by_control.iter().map(|(c, n)| (c.clone(), *n as f64, n.to_string())).collect();
    html.push_str(&bars("Violations by control", &rows, max));
    let rows: Vec<(String, f64, String)> = s
        .deploys_by_service
        .iter()
        .map(|(svc, (t, c))| (svc.clone(), if *t == 0 { 0.0 } else { *c as f64 / *t as f64 }, share(*c, *t)))
        .collect();
    html.push_str(&bars("Share of compliant deploys by service", &rows, 1.0));
    html.push_str(&columns(s));
    html.push_str("<h2>Controls</h2><table><tr><th>Control</th><th>Violations</th></tr>");
    for (control, n) in &s.violations_by_control {
        html.push_str(&format!("<tr><td>{}</td><td>{n}</td></tr>", esc(control)));
    }
    html.push_str("</table><h2>Services</h2><table><tr><th>Service</th><th>Deploys</th><th>Compliant</th></tr>");
    for (svc, (t, c)) in &s.deploys_by_service {
        html.push_str(&format!("<tr><td>{}</td><td>{t}</td><td>{}</td></tr>", esc(svc), share(*c, *t)));
    }
    html.push_str(
        "</table><h2>Every deploy, traced</h2><table class=\"trace\"><tr><th>Deploy</th><th>Commit and pull request</th><th>Reviews</th><th>CI runs</th><th>Change request</th><th>Outcomes</th></tr>",
    );
    for d in deploys {
        let opt = |o: &Option<String>| esc(o.as_deref().unwrap_or("—"));
        let failed: Vec<&String> = d.outcomes.iter().filter(|o| o.contains(" violation ")).collect();
        html.push_str(&format!(
            "<tr class=\"{}\"><td><b>{}</b><br>{} {}<br>{} by {}</td><td>{}<br>{} by {}, merged by {}</td><td>{}</td><td>{}</td><td>{}<br>approved by {}</td><td>{}</td></tr>",
            if d.compliant { "ok" } else { "bad" },
            esc(&d.deploy_id),
            esc(&d.service),
            esc(&crate::decode::format_ms(d.event_time)),
            esc(&d.status),
            esc(&d.deployer),
            esc(d.commit_sha.get(..12).unwrap_or(&d.commit_sha)),
            opt(&d.pull_request),
            opt(&d.pr_author),
            opt(&d.merged_by),
            esc(&d.reviewers.join(", ")),
            d.ci_runs.len(),
            opt(&d.change_id),
            opt(&d.change_approver),
            if failed.is_empty() { "all pass".to_string() } else { esc(&failed.iter().map(|f| f.split(' ').next().unwrap_or_default()).collect::<Vec<_>>().join(", ")) },
        ));
    }
    html + "</table><footer>Generated by Vigil from the evidence archive; every deploy's record is hash-chained (check with <code>vigil verify</code>).</footer></body></html>\n"
}

const CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.6em}.figures{display:flex;gap:2em;margin:1em 0}.figures div{background:#f3f5f8;padding:1em 1.5em;border-radius:6px}.figures b{display:block;font-size:2em}figure{margin:1.5em 0}figcaption{font-weight:bold;margin-bottom:.4em}.b{fill:#3b6fb6}.l,.v,.d{font-size:12px}.axis{stroke:#999}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}tr.bad td:first-child{border-left:4px solid #c0392b}tr.ok td:first-child{border-left:4px solid #27ae60}footer{margin-top:2em;color:#666;font-size:12px}";

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn event_text_is_escaped_before_it_reaches_the_page() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & co"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"
        );
        assert_eq!(esc("&lt;"), "&amp;lt;");
    }
}
