//! Line charts as inline SVG, drawn in Rust: axes with round ticks, a
//! legend, lines, steps (the pace) and dashed levels (limits, the budget).
//!
//! Every series is one or more `<polyline>`s (a gap, such as "no limit",
//! splits it) carrying `data-series`; the chart's `<svg>` carries
//! `data-chart` and `data-points` (the first series' points), so a browser
//! test can find every point through the DOM.

use std::fmt::Write;

const W: f64 = 1000.0;
const H: f64 = 250.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 28.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Straight lines between points.
    Line,
    /// A value holds until the next point (the pace).
    Step,
    /// A dashed line (a limit, the budget).
    Dashed,
}

#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub name: String,
    pub color: &'static str,
    pub style: Style,
    /// (x, y); `None` is a gap.
    pub points: Vec<(f64, Option<f64>)>,
}

/// A vertical mark on the time axis (a run's stop), with its text.
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Chart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    /// Say how the y axis reads ("requests/min").
    pub unit: &'a str,
    /// The y axis is USD.
    pub money: bool,
    /// The time axis in ms (labels are elapsed time from `x0`).
    pub x0: f64,
    pub x1: f64,
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
}

/// A number for an axis or a table: 1.2k, 3.4M, 0.05.
pub(crate) fn short_number(v: f64) -> String {
    let a = v.abs();
    let (v, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.01 || v == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    };
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

/// Elapsed time for the axis: `m:ss` under an hour, `h:mm` after, `Nd hh:mm` after a day.
pub(crate) fn elapsed(ms: f64) -> String {
    let s = (ms / 1000.0).round().max(0.0) as u64;
    if s < 3600 {
        format!("{}:{:02}", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}:{:02}h", s / 3600, (s % 3600) / 60)
    } else {
        format!(
            "{}d {:02}:{:02}h",
            s / 86_400,
            (s % 86_400) / 3600,
            (s % 3600) / 60
        )
    }
}

/// A round step giving about `n` ticks over `range`.
pub(crate) fn nice_step(range: f64, n: f64) -> f64 {
    if range.is_nan() || range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Time ticks in ms: round steps (seconds, minutes, hours), at most ~8.
fn time_step(range_ms: f64) -> f64 {
    const STEPS: &[f64] = &[
        1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3,
        10800e3, 21600e3, 43200e3, 86400e3,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| range_ms / s <= 8.0)
        .unwrap_or_else(|| (range_ms / 8.0 / 86400e3).ceil() * 86400e3)
}

pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Draws `c` as one `<svg>` element.
pub(crate) fn chart(c: &Chart<'_>) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let x_range = (c.x1 - c.x0).max(1.0);
    let ymax_data = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let step = nice_step(ymax_data.max(f64::MIN_POSITIVE) * 1.05, 5.0);
    let ymax = if ymax_data > 0.0 {
        (ymax_data * 1.05 / step).ceil() * step
    } else {
        1.0
    };
    let step = if ymax_data > 0.0 { step } else { 0.25 };
    let sx = |x: f64| LEFT + ((x - c.x0) / x_range).clamp(0.0, 1.0) * pw;
    let sy = |y: f64| TOP + ph - (y / ymax).clamp(0.0, 1.0) * ph;
    let main_points = c
        .series
        .first()
        .map_or(0, |s| s.points.iter().filter(|p| p.1.is_some()).count());

    let mut o = String::with_capacity(4096 + main_points * 40);
    let _ = write!(
        o,
        r#"<svg class="chart" data-chart="{id}" data-points="{main_points}" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{title}" xmlns="http://www.w3.org/2000/svg"><title>{title}</title>"#,
        id = escape(c.id),
        title = escape(c.title),
    );
    // Grid and y axis.
    let mut y = 0.0;
    while y <= ymax + step * 1e-9 {
        let py = sy(y);
        let label = if c.money {
            format!("${}", short_number(y))
        } else {
            short_number(y)
        };
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{x2}" y1="{py:.1}" y2="{py:.1}" stroke="#e5e7eb"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="tick">{label}</text>"##,
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = py + 4.0,
        );
        y += step;
    }
    let _ = write!(
        o,
        r##"<text x="12" y="{cy}" transform="rotate(-90 12 {cy})" text-anchor="middle" class="unit">{unit}</text>"##,
        cy = TOP + ph / 2.0,
        unit = escape(c.unit),
    );
    // Time axis.
    let tstep = time_step(x_range);
    let mut t = 0.0;
    while t <= x_range + 1e-9 {
        let px = sx(c.x0 + t);
        let _ = write!(
            o,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{yb}" stroke="#f1f5f9"/><text x="{px:.1}" y="{ty}" text-anchor="middle" class="tick">{label}</text>"##,
            yb = TOP + ph,
            ty = H - 8.0,
            label = elapsed(t),
        );
        t += tstep;
    }
    let _ = write!(
        o,
        r##"<line x1="{LEFT}" x2="{x2}" y1="{yb}" y2="{yb}" stroke="#64748b"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{yb}" stroke="#64748b"/>"##,
        x2 = W - RIGHT,
        yb = TOP + ph,
    );
    for m in &c.markers {
        let px = sx(m.x);
        let _ = write!(
            o,
            r##"<g class="marker"><title>{label}</title><line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{yb}" stroke="#9333ea" stroke-dasharray="2 3"/></g>"##,
            yb = TOP + ph,
            label = escape(&m.label),
        );
    }
    // Series.
    for s in &c.series {
        let dash = if s.style == Style::Dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let mut seg = String::new();
        let mut n = 0usize;
        let mut prev: Option<f64> = None;
        let flush = |o: &mut String, seg: &mut String, n: &mut usize| {
            if *n > 0 {
                let _ = write!(
                    o,
                    r#"<polyline data-series="{name}" fill="none" stroke="{color}" stroke-width="1.6"{dash} points="{pts}"><title>{name}</title></polyline>"#,
                    name = escape(&s.name),
                    color = s.color,
                    pts = seg.trim_end(),
                );
            }
            seg.clear();
            *n = 0;
        };
        for &(x, v) in &s.points {
            match v.filter(|v| v.is_finite()) {
                Some(v) => {
                    if s.style == Style::Step {
                        if let Some(p) = prev {
                            let _ = write!(seg, "{:.1},{:.1} ", sx(x), sy(p));
                        }
                    }
                    let _ = write!(seg, "{:.1},{:.1} ", sx(x), sy(v));
                    n += 1;
                    prev = Some(v);
                }
                None => {
                    if s.style == Style::Step && n > 0 {
                        if let Some(p) = prev {
                            let _ = write!(seg, "{:.1},{:.1} ", sx(x), sy(p));
                        }
                    }
                    flush(&mut o, &mut seg, &mut n);
                    prev = None;
                }
            }
        }
        flush(&mut o, &mut seg, &mut n);
    }
    // Legend.
    let mut lx = LEFT;
    let _ = write!(
        o,
        r#"<text x="{LEFT}" y="14" class="ctitle">{}</text>"#,
        escape(c.title)
    );
    lx += 8.0 * c.title.chars().count() as f64 + 24.0;
    for s in &c.series {
        let dash = if s.style == Style::Dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            o,
            r#"<line x1="{lx}" x2="{x2}" y1="10" y2="10" stroke="{color}" stroke-width="2.5"{dash}/><text x="{tx}" y="14" class="legend">{name}</text>"#,
            x2 = lx + 18.0,
            tx = lx + 22.0,
            color = s.color,
            name = escape(&s.name),
        );
        lx += 22.0 + 6.5 * s.name.chars().count() as f64 + 16.0;
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(style: Style, points: Vec<(f64, Option<f64>)>) -> Series {
        Series {
            name: "a<b".into(),
            color: "#000",
            style,
            points,
        }
    }

    fn chart_of(series: Vec<Series>) -> String {
        chart(&Chart {
            id: "requests",
            title: "Requests & more",
            unit: "per min",
            money: false,
            x0: 0.0,
            x1: 60_000.0,
            series,
            markers: vec![Marker {
                x: 30_000.0,
                label: "stopped: <budget>".into(),
            }],
        })
    }

    #[test]
    fn a_chart_has_its_points_in_polylines_and_escapes_text() {
        let svg = chart_of(vec![series(
            Style::Line,
            vec![
                (0.0, Some(1.0)),
                (10_000.0, Some(5.0)),
                (20_000.0, Some(2.0)),
            ],
        )]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(
            svg.contains(r#"data-chart="requests" data-points="3""#),
            "{svg}"
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        let pts = svg
            .split(" points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(pts.split(' ').count(), 3, "{pts}");
        // The first point is at the left edge, the highest near the top.
        assert!(pts.starts_with("70.0,"), "{pts}");
        assert!(svg.contains("a&lt;b") && svg.contains("Requests &amp; more"));
        assert!(svg.contains("stopped: &lt;budget&gt;"));
        assert!(!svg.contains("a<b"));
    }

    #[test]
    fn a_gap_splits_a_series_and_steps_hold_their_value() {
        let svg = chart_of(vec![series(
            Style::Step,
            vec![
                (0.0, Some(10.0)),
                (10_000.0, Some(20.0)),
                (20_000.0, None),
                (30_000.0, Some(5.0)),
            ],
        )]);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(svg.contains(r#"data-points="3""#));
        let first = svg
            .split(" points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        // 10 → (step) → 20, held until the gap: 4 vertices.
        assert_eq!(first.split(' ').count(), 4, "{first}");
    }

    #[test]
    fn an_empty_chart_still_draws_axes() {
        let svg = chart_of(vec![series(Style::Line, vec![])]);
        assert!(svg.contains(r#"data-points="0""#));
        assert!(!svg.contains("<polyline"));
        assert!(svg.contains("class=\"tick\""));
    }

    #[test]
    fn numbers_and_times_read_well() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(2_000_000.0), "2M");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(12.5), "12.5");
        assert_eq!(short_number(0.0012), "0.0012");
        assert_eq!(elapsed(65_000.0), "1:05");
        assert_eq!(elapsed(3_660_000.0), "1:01h");
        assert_eq!(elapsed(90_000_000.0), "1d 01:00h");
        assert_eq!(nice_step(100.0, 5.0), 20.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(time_step(60_000.0), 10_000.0);
    }
}
