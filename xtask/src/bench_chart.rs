//! The bench's charts: one SVG per persistence policy, written beside `docs/BENCHMARKS.md`.
//! Two panels over the same rows (a test at a pipeline depth): throughput, and the server's
//! CPU per request, Moon at 1 and 2 shards beside Redis. Plain SVG, no dependency.

use std::fmt::Write as _;

const SERIES: [(&str, &str); 3] = [
    ("moon 1 shard", "#3b6fb6"),
    ("moon 2 shards", "#7fa7dc"),
    ("redis 7", "#c0504d"),
];
const BAR: f64 = 9.0;
const GAP: f64 = 14.0;
const PANEL: f64 = 170.0;
const LEFT: f64 = 60.0;
const TOP: f64 = 40.0;

/// The chart of `rows`: (label, [(requests/s, CPU µs per request); moon 1, moon 2, redis]).
pub(crate) fn svg(policy: &str, rows: &[(String, [(f64, f64); 3])]) -> String {
    let group = 3.0 * BAR + GAP;
    let width = LEFT + group * rows.len() as f64 + 20.0;
    let height = TOP + 2.0 * PANEL + 130.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="10">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="16" font-size="13">appendfsync {policy}: throughput (top, k req/s) and server CPU per request (bottom, µs)</text>"#
    );
    for (i, (name, color)) in SERIES.iter().enumerate() {
        let x = LEFT + i as f64 * 110.0;
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="24" width="10" height="10" fill="{color}"/><text x="{:.0}" y="33">{name}</text>"#,
            x + 14.0
        );
    }
    panel(&mut out, rows, TOP, |v| v.0 / 1000.0, "k req/s");
    panel(&mut out, rows, TOP + PANEL + 20.0, |v| v.1, "µs");
    let base = TOP + 2.0 * PANEL + 30.0;
    for (i, (label, _)) in rows.iter().enumerate() {
        let x = LEFT + i as f64 * group + 1.5 * BAR;
        let _ = writeln!(
            out,
            r#"<text transform="translate({x:.1},{base:.1}) rotate(60)">{label}</text>"#
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One panel: a bar per series and row, scaled to the panel's largest value.
fn panel(
    out: &mut String,
    rows: &[(String, [(f64, f64); 3])],
    top: f64,
    value: impl Fn(&(f64, f64)) -> f64,
    unit: &str,
) {
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(&value))
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let bottom = top + PANEL;
    let group = 3.0 * BAR + GAP;
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{:.0}" y2="{bottom}" stroke="#888"/><text x="4" y="{:.0}">{max:.1} {unit}</text><text x="4" y="{bottom}">0</text>"##,
        LEFT + group * rows.len() as f64,
        top + 10.0
    );
    for (i, (_, values)) in rows.iter().enumerate() {
        for (j, v) in values.iter().enumerate() {
            let h = value(v) / max * (PANEL - 10.0);
            let x = LEFT + i as f64 * group + j as f64 * BAR;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"/>"#,
                bottom - h,
                BAR - 1.0,
                SERIES[j].1
            );
        }
    }
}
