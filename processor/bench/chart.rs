//! The soak's chart: resident set and live heap over the run, as an SVG a
//! browser opens, with the warm-up and the ±10 % band around the resident
//! set's mean after it.

use std::fmt::Write;

use super::soak::SoakRun;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const MIB: f64 = 1024.0 * 1024.0;

pub fn svg(run: &SoakRun) -> String {
    let minutes = |s: f64| s / 60.0;
    let x_max = run.samples.last().map_or(1.0, |s| minutes(s.seconds)).max(1.0);
    let y_max = run
        .samples
        .iter()
        .map(|s| (s.rss_bytes as f64).max(s.heap_bytes.unwrap_or(0) as f64) / MIB)
        .fold(1.0, f64::max)
        * 1.15;
    let x = |m: f64| LEFT + m / x_max * (WIDTH - LEFT - RIGHT);
    let y = |mib: f64| HEIGHT - BOTTOM - mib / y_max * (HEIGHT - TOP - BOTTOM);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let spread = run.rss_after_warmup.as_ref();
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">vigil bench --soak: {} events at {} events/s, resident set after warm-up within ±{}</text>"#,
        run.events,
        run.events_per_s,
        spread.map_or("(no samples after warm-up)".into(), |s| format!("{:.1} % of its mean", s.spread_pct))
    );
    if let Some(s) = spread {
        let (top, bottom) = (y(s.mean_bytes * 1.1 / MIB), y(s.mean_bytes * 0.9 / MIB));
        let _ = writeln!(
            out,
            r##"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="#dbeafe"/>"##,
            x(minutes(run.warmup_s)),
            x(x_max) - x(minutes(run.warmup_s)),
            bottom - top
        );
    }
    // Axes, ticks and labels.
    let _ = writeln!(
        out,
        r#"<path d="M{LEFT},{TOP} V{} H{}" fill="none" stroke="black"/>"#,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT
    );
    for i in 0..=5 {
        let (m, mib) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{m:.0}</text><text x="{}" y="{:.1}" text-anchor="end">{mib:.0}</text>"#,
            x(m),
            HEIGHT - BOTTOM + 18.0,
            LEFT - 6.0,
            y(mib) + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">minutes</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">MiB</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    let warm = x(minutes(run.warmup_s).min(x_max));
    let _ = writeln!(
        out,
        r#"<path d="M{warm:.1},{TOP} V{}" stroke="gray" stroke-dasharray="4 4"/><text x="{:.1}" y="{}" fill="gray">warm-up</text>"#,
        HEIGHT - BOTTOM,
        warm + 4.0,
        TOP + 12.0
    );
    let line = |values: Vec<(f64, f64)>| {
        values.iter().map(|(m, mib)| format!("{:.1},{:.1}", x(*m), y(*mib))).collect::<Vec<_>>().join(" ")
    };
    let rss = line(run.samples.iter().map(|s| (minutes(s.seconds), s.rss_bytes as f64 / MIB)).collect());
    let heap =
        line(run.samples.iter().filter_map(|s| s.heap_bytes.map(|h| (minutes(s.seconds), h as f64 / MIB))).collect());
    let _ = writeln!(out, r##"<polyline points="{rss}" fill="none" stroke="#1d4ed8" stroke-width="2"/>"##);
    let _ = writeln!(out, r##"<polyline points="{heap}" fill="none" stroke="#ea580c" stroke-width="2"/>"##);
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" fill="#1d4ed8">resident set</text><text x="{}" y="{}" fill="#ea580c">live heap</text>"##,
        WIDTH - 200.0,
        TOP + 12.0,
        WIDTH - 100.0,
        TOP + 12.0
    );
    out.push_str("</svg>\n");
    out
}
