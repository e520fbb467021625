//! An SVG plot of a run over time: throughput (and errors) per second above, p99 latency
//! per second below on a log scale, with the fault events marked. Written by hand: a few
//! polylines, axes and labels.

use std::fmt::Write as _;

use crate::stats::{Event, TimelinePoint};

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 620.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const PANEL_HEIGHT: f64 = 210.0;
const PANEL_GAP: f64 = 70.0;
const THROUGHPUT_COLOR: &str = "#1f77b4";
const ERROR_COLOR: &str = "#d62728";
const LATENCY_COLOR: &str = "#2ca02c";
const EVENT_COLOR: &str = "#7f7f7f";

/// A rectangle of the drawing with a data range mapped onto it.
struct Panel {
    top: f64,
    x_max: f64,
    y_min: f64,
    y_max: f64,
    log: bool,
}

impl Panel {
    fn plot_width() -> f64 {
        WIDTH - LEFT - RIGHT
    }

    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.x_max).clamp(0.0, 1.0) * Panel::plot_width()
    }

    fn y(&self, v: f64) -> f64 {
        let frac = if self.log {
            let v = v.max(self.y_min);
            (v.log10() - self.y_min.log10()) / (self.y_max.log10() - self.y_min.log10())
        } else {
            (v - self.y_min) / (self.y_max - self.y_min)
        };
        self.top + PANEL_HEIGHT * (1.0 - frac.clamp(0.0, 1.0))
    }

    fn bottom(&self) -> f64 {
        self.top + PANEL_HEIGHT
    }
}

/// Characters per title line (the title wraps onto a second line after that).
const TITLE_CHARS: usize = 110;

/// Splits `text` into lines of at most `width` characters at `, ` boundaries (a longer
/// piece stays whole on its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for piece in text.split(", ") {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + piece.chars().count() <= width => {
                line.push_str(", ");
                line.push_str(piece);
            }
            _ => lines.push(piece.to_owned()),
        }
    }
    lines
}

/// Escapes text for an SVG text node or attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" step (1, 2 or 5 times a power of ten) giving about `target` ticks up to `max`.
pub fn nice_step(max: f64, target: usize) -> f64 {
    let raw = (max / target.max(1) as f64).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    if step > 0.0 {
        step
    } else {
        1.0
    }
}

fn fmt_number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 || v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn fmt_latency_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{} s", fmt_number(ms / 1000.0))
    } else if ms >= 1.0 {
        format!("{} ms", fmt_number(ms))
    } else {
        format!("{} µs", fmt_number(ms * 1000.0))
    }
}

/// Appends one polyline per run of consecutive defined points.
fn polylines(out: &mut String, points: &[Option<(f64, f64)>], color: &str) {
    for run in points.split(Option::is_none) {
        let coords: Vec<String> = run
            .iter()
            .flatten()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        if coords.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            coords.join(" ")
        );
        if coords.len() == 1 {
            // A lone point is invisible as a line; mark it.
            if let Some(Some((x, y))) = run.first() {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{color}"/>"#
                );
            }
        }
    }
}

fn x_axis(out: &mut String, panel: &Panel) {
    let step = nice_step(panel.x_max, 10);
    let mut t = 0.0;
    while t <= panel.x_max + 1e-9 {
        let x = panel.x(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{b2:.1}" stroke="#000"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle">{}</text>"##,
            fmt_number(t),
            b = panel.bottom(),
            b2 = panel.bottom() + 5.0,
            ty = panel.bottom() + 18.0,
        );
        t += step;
    }
}

fn frame(out: &mut String, panel: &Panel, label: &str) {
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{w}" height="{PANEL_HEIGHT}" fill="none" stroke="#000"/>"##,
        top = panel.top,
        w = Panel::plot_width(),
    );
    let cy = panel.top + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="20" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 20 {cy:.1})">{}</text>"#,
        escape(label)
    );
}

fn y_gridline(out: &mut String, panel: &Panel, v: f64, text: &str) {
    let y = panel.y(v);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{}</text>"##,
        escape(text),
        x2 = LEFT + Panel::plot_width(),
        tx = LEFT - 6.0,
        ty = y + 4.0,
    );
}

/// Renders the plot of `timeline` with `events` marked, under `title`.
pub fn render_svg(title: &str, timeline: &[TimelinePoint], events: &[Event]) -> String {
    let x_max = timeline
        .iter()
        .map(|p| p.t_s + p.seconds)
        .chain(events.iter().map(|e| e.at_s))
        .fold(1.0f64, f64::max);
    let mid = |p: &TimelinePoint| p.t_s + p.seconds / 2.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>"##
    );
    for (i, line) in wrap(title, TITLE_CHARS).iter().take(2).enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{cx}" y="{y}" text-anchor="middle" font-size="13" font-weight="{weight}">{}</text>"#,
            escape(line),
            cx = WIDTH / 2.0,
            y = 20.0 + 17.0 * i as f64,
            weight = if i == 0 { "bold" } else { "normal" },
        );
    }

    // Throughput (and errors) per second.
    let error_rate = |p: &TimelinePoint| p.errors as f64 / p.seconds.max(1e-3);
    let y_max = timeline
        .iter()
        .map(|p| p.throughput.max(error_rate(p)))
        .fold(0.0f64, f64::max);
    let step = nice_step(y_max.max(1.0), 5);
    let tput = Panel {
        top: TOP,
        x_max,
        y_min: 0.0,
        y_max: (y_max.max(1.0) / step).ceil() * step,
        log: false,
    };
    frame(&mut out, &tput, "ops/s");
    let mut v = 0.0;
    while v <= tput.y_max + 1e-9 {
        y_gridline(&mut out, &tput, v, &fmt_number(v));
        v += step;
    }
    x_axis(&mut out, &tput);
    let line: Vec<_> = timeline
        .iter()
        .map(|p| Some((tput.x(mid(p)), tput.y(p.throughput))))
        .collect();
    polylines(&mut out, &line, THROUGHPUT_COLOR);
    let has_errors = timeline.iter().any(|p| p.errors > 0);
    if has_errors {
        let line: Vec<_> = timeline
            .iter()
            .map(|p| Some((tput.x(mid(p)), tput.y(error_rate(p)))))
            .collect();
        polylines(&mut out, &line, ERROR_COLOR);
    }
    let legend_y = TOP - 10.0;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{legend_y}" fill="{THROUGHPUT_COLOR}">— successful ops/s</text>"#
    );
    if has_errors {
        let _ = writeln!(
            out,
            r#"<text x="{x}" y="{legend_y}" fill="{ERROR_COLOR}">— errors/s</text>"#,
            x = LEFT + 150.0
        );
    }

    // p99 latency per second, log scale.
    let p99_ms: Vec<Option<f64>> = timeline
        .iter()
        .map(|p| p.p99_us.map(|us| us as f64 / 1000.0))
        .collect();
    let (lo, hi) = p99_ms
        .iter()
        .flatten()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi > 0.0 { (lo, hi) } else { (1.0, 10.0) };
    let decade_lo = lo.max(1e-3).log10().floor();
    let decade_hi = hi.max(1e-3).log10().ceil().max(decade_lo + 1.0);
    let lat = Panel {
        top: TOP + PANEL_HEIGHT + PANEL_GAP,
        x_max,
        y_min: 10f64.powf(decade_lo),
        y_max: 10f64.powf(decade_hi),
        log: true,
    };
    frame(&mut out, &lat, "p99 latency");
    let mut d = decade_lo;
    while d <= decade_hi + 1e-9 {
        let v = 10f64.powf(d);
        y_gridline(&mut out, &lat, v, &fmt_latency_ms(v));
        d += 1.0;
    }
    x_axis(&mut out, &lat);
    let line: Vec<_> = timeline
        .iter()
        .zip(&p99_ms)
        .map(|(p, v)| v.map(|v| (lat.x(mid(p)), lat.y(v))))
        .collect();
    polylines(&mut out, &line, LATENCY_COLOR);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{y}" fill="{LATENCY_COLOR}">— p99 latency of successful ops (per second)</text>"#,
        y = lat.top - 10.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{cx}" y="{y}" text-anchor="middle">seconds since the start of the measurement</text>"#,
        cx = LEFT + Panel::plot_width() / 2.0,
        y = lat.bottom() + 40.0
    );

    // Fault events: a dashed vertical line through both panels, labelled above.
    for (i, e) in events.iter().enumerate() {
        let x = tput.x(e.at_s);
        let label = match &e.node {
            Some(node) => format!("{} {node}", e.kind),
            None => e.kind.to_owned(),
        };
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y1}" x2="{x:.1}" y2="{y2}" stroke="{EVENT_COLOR}" stroke-dasharray="5,4"/>"#,
            y1 = TOP,
            y2 = lat.bottom()
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{y}" fill="{EVENT_COLOR}">{}</text>"#,
            escape(&label),
            x = x + 4.0,
            y = TOP + 14.0 + 14.0 * (i % 2) as f64
        );
    }
    if timeline.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{cx}" y="{cy}" text-anchor="middle">no data</text>"#,
            cx = WIDTH / 2.0,
            cy = TOP + PANEL_HEIGHT / 2.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that every tag is closed in order, every attribute is quoted and no text has a
    /// bare `<` or `&`: enough XML well-formedness for what we emit.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            for (i, _) in text.match_indices('&') {
                let entity = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| entity.starts_with(e)),
                    "bare & in {text:?}"
                );
            }
            let close = rest[open..].find('>').expect("unterminated tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "< inside tag {tag:?}");
            assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name").to_owned();
                stack.push(name);
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    }

    fn point(t: u64, ok: u64, errors: u64, p99_us: Option<u64>) -> TimelinePoint {
        TimelinePoint {
            t_s: t as f64,
            seconds: 1.0,
            ok,
            errors,
            throughput: ok as f64,
            p99_us,
        }
    }

    #[test]
    fn svg_is_well_formed_with_polylines_axes_and_events() {
        let timeline: Vec<_> = (0..30)
            .map(|t| {
                if (10..13).contains(&t) {
                    point(t, 0, 50, None)
                } else {
                    point(t, 4000 + t * 10, 0, Some(900 + t * 100))
                }
            })
            .collect();
        let events = vec![
            Event {
                at_s: 10.0,
                kind: "kill",
                node: Some("n2".into()),
                pid: Some(42),
                detail: "killed".into(),
            },
            Event {
                at_s: 20.0,
                kind: "restart",
                node: Some("n2".into()),
                pid: Some(43),
                detail: "started".into(),
            },
        ];
        let svg = render_svg("workload a & <friends>", &timeline, &events);
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_well_formed(&svg);
        // Throughput, errors, and p99 in two runs around the three quiet seconds.
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        assert!(svg.contains("kill n2") && svg.contains("restart n2"));
        assert!(svg.contains("workload a &amp; &lt;friends&gt;"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains(">ops/s<") && svg.contains(">p99 latency<"));
    }

    #[test]
    fn empty_timeline_still_renders_a_well_formed_plot() {
        let svg = render_svg("nothing", &[], &[]);
        assert!(svg.starts_with("<svg"));
        assert_well_formed(&svg);
        assert!(svg.contains("no data"));
    }

    #[test]
    fn single_point_is_drawn_as_a_marker() {
        let svg = render_svg("one", &[point(0, 10, 0, Some(500))], &[]);
        assert_well_formed(&svg);
        assert!(svg.contains("<polyline") && svg.contains("<circle"));
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(10.0, 10), 1.0);
        assert_eq!(nice_step(30.0, 10), 5.0);
        assert_eq!(nice_step(17.0, 10), 2.0);
        assert_eq!(nice_step(45_000.0, 5), 10_000.0);
        assert_eq!(nice_step(0.3, 3), 0.1);
    }

    #[test]
    fn long_titles_wrap_at_commas() {
        assert_eq!(wrap("a, b, c", 4), vec!["a, b", "c"]);
        assert_eq!(wrap("short", 100), vec!["short"]);
        assert_eq!(wrap("toolongpiece, x", 4), vec!["toolongpiece", "x"]);
    }

    #[test]
    fn latency_labels_pick_a_readable_unit() {
        assert_eq!(fmt_latency_ms(0.1), "100 µs");
        assert_eq!(fmt_latency_ms(10.0), "10 ms");
        assert_eq!(fmt_latency_ms(10_000.0), "10 s");
    }
}
