//! An SVG picture of a simulated run: workers, waiting jobs and each job's
//! wait over time, one panel each, on a shared time axis.

use std::fmt::Write;

use crate::sim::SimResult;

const W: f64 = 900.0;
const PANEL: f64 = 180.0;
const LEFT: f64 = 60.0;
const GAP: f64 = 40.0;

struct Panel<'a> {
    title: &'a str,
    points: Vec<(f64, f64)>,
    step: bool,
    dots: bool,
    line_at: Option<f64>,
}

/// The plot of `r`; `slo` draws the SLO line on the waits panel.
pub fn svg(r: &SimResult, title: &str, slo: f64) -> String {
    let t_end = r
        .timeline
        .last()
        .map(|s| s.t)
        .unwrap_or(1.0)
        .max(r.waits.last().map(|w| w.0).unwrap_or(1.0))
        .max(1.0);
    let panels = [
        Panel {
            title: "workers",
            points: r.timeline.iter().map(|s| (s.t, s.workers as f64)).collect(),
            step: true,
            dots: false,
            line_at: None,
        },
        Panel {
            title: "waiting jobs",
            points: r.timeline.iter().map(|s| (s.t, s.waiting as f64)).collect(),
            step: true,
            dots: false,
            line_at: None,
        },
        Panel {
            title: "wait of each job (s), by arrival",
            points: r.waits.clone(),
            step: false,
            dots: true,
            line_at: Some(slo),
        },
    ];
    let height = 50.0 + panels.len() as f64 * (PANEL + GAP) + 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        escape(title)
    );
    let plot_w = W - LEFT - 20.0;
    for (i, p) in panels.iter().enumerate() {
        let top = 50.0 + i as f64 * (PANEL + GAP);
        let y_max = p
            .points
            .iter()
            .map(|q| q.1)
            .chain(p.line_at)
            .fold(1.0f64, f64::max)
            * 1.1;
        let x = |t: f64| LEFT + t / t_end * plot_w;
        let y = |v: f64| top + PANEL - v / y_max * PANEL;
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#999"/>"##
        );
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{}">{}</text>"#,
            top - 6.0,
            p.title
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#,
            LEFT - 6.0,
            top + 10.0,
            y_max
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">0</text>"#,
            LEFT - 6.0,
            top + PANEL
        );
        if let Some(v) = p.line_at {
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy}" y2="{yy}" stroke="#c00" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#c00" text-anchor="end">SLO</text>"##,
                LEFT + plot_w,
                LEFT + plot_w - 4.0,
                y(v) - 4.0,
                yy = y(v)
            );
        }
        if p.dots {
            for &(t, v) in &p.points {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="1.5" fill="#36c"/>"##,
                    x(t),
                    y(v)
                );
            }
        } else if !p.points.is_empty() {
            let mut d = String::new();
            let mut prev: Option<(f64, f64)> = None;
            for &(t, v) in &p.points {
                match prev {
                    None => {
                        let _ = write!(d, "M{:.1},{:.1}", x(t), y(v));
                    }
                    Some((_, pv)) if p.step => {
                        let _ = write!(d, " L{:.1},{:.1} L{:.1},{:.1}", x(t), y(pv), x(t), y(v));
                    }
                    Some(_) => {
                        let _ = write!(d, " L{:.1},{:.1}", x(t), y(v));
                    }
                }
                prev = Some((t, v));
            }
            let _ = write!(
                s,
                r##"<path d="{d}" fill="none" stroke="#36c" stroke-width="1.5"/>"##
            );
        }
    }
    let bottom = 50.0 + panels.len() as f64 * (PANEL + GAP) - GAP + 16.0;
    let _ = write!(s, r#"<text x="{LEFT}" y="{bottom}">0 s</text>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="{bottom}" text-anchor="end">{t_end:.0} s</text>"#,
        LEFT + plot_w
    );
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
