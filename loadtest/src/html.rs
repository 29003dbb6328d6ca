//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched),
//! so it can be attached to a ticket or archived with the deployment it measured.
//!
//! Plots are drawn by `plotters` into SVG strings; with no font feature it leaves text to the
//! browser, so no font file is needed either.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::Error;
use crate::ingestion::Latency;
use crate::monitor::{ProcessReport, Second};
use crate::report::{LatencyReport, Mode, P95_TARGET_MS, Report, write_file};

const WIDTH: u32 = 960;
const HEIGHT: u32 = 300;

/// Writes the report as HTML to `path`.
pub fn write(report: &Report, path: &Path) -> Result<(), Error> {
    write_file(path, render(report).as_bytes())
}

/// Text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

fn ms(v: f64) -> String {
    format!("{v:.2} ms")
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut h = String::new();
    let verdict = r.verdict.as_str();
    let started = httpdate::fmt_http_date(
        UNIX_EPOCH + Duration::from_millis(u64::try_from(r.started_at_ms).unwrap_or(0)),
    );
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>loadtest {run} — {verdict}</title><style>{CSS}</style></head><body>\n\
         <h1>Load test <code>{run}</code> <span class=\"{class}\">{verdict}</span></h1>\n\
         <p class=\"sub\">{mode} run started {started}: {sessions} sessions, {source}.</p>\n",
        run = esc(&r.plan.run_id),
        class = verdict.to_lowercase(),
        mode = match r.mode {
            Mode::Fixed => "Fixed-rate",
            Mode::Ramp => "Ramp",
        },
        sessions = r.plan.sessions,
        source = esc(&r.source.detail),
    );

    h.push_str("<h2>Summary</h2>\n<table class=\"kv\">\n");
    let row = |h: &mut String, k: &str, v: String| {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    let (p, t) = (&r.publish, &r.verification.tally);
    row(
        &mut h,
        "throughput",
        format!(
            "target {} points/s, achieved {:.0} points/s over {:.1} s",
            r.plan.rate, p.achieved_rate, p.publish_secs
        ),
    );
    row(
        &mut h,
        "points",
        format!(
            "{} published, {} acknowledged by the broker, {} stored ({} rows)",
            p.points_published, p.points_acked, t.stored_distinct, t.stored_rows
        ),
    );
    row(&mut h, "lost", t.lost.to_string());
    row(&mut h, "duplicated", t.duplicated.to_string());
    match &r.latency {
        LatencyReport::Available {
            publish_to_commit: l,
            receive_to_commit,
            points_committed,
            window_secs,
        } => {
            row(&mut h, "publish→commit p50", ms(l.p50_ms));
            row(&mut h, "publish→commit p95", ms(l.p95_ms));
            row(&mut h, "publish→commit p99", ms(l.p99_ms));
            row(&mut h, "publish→commit max", ms(l.max_ms));
            row(
                &mut h,
                "receive→commit p95",
                opt(receive_to_commit.as_ref(), |r| ms(r.p95_ms)),
            );
            row(
                &mut h,
                "points in the latency window",
                format!(
                    "{} in {window_secs:.1} s (ingestion committed {})",
                    l.count,
                    opt(*points_committed, |c| c.to_string())
                ),
            );
        }
        LatencyReport::Unavailable { reason } => {
            row(&mut h, "latency", format!("unavailable: {reason}"))
        }
    }
    match &r.process {
        ProcessReport::Available {
            cpu_seconds,
            cpu_cores_mean,
            cpu_cores_peak,
            rss_peak_bytes,
            rss_start_bytes,
            ..
        } => {
            row(
                &mut h,
                "ingestion CPU",
                format!(
                    "{} cores mean under load, {} in the busiest second ({cpu_seconds:.1} CPU seconds)",
                    opt(*cpu_cores_mean, |c| format!("{c:.2}")),
                    opt(*cpu_cores_peak, |c| format!("{c:.2}")),
                ),
            );
            row(
                &mut h,
                "ingestion memory",
                format!(
                    "peak {} (at start {})",
                    opt(*rss_peak_bytes, mib),
                    opt(*rss_start_bytes, mib)
                ),
            );
        }
        ProcessReport::Unavailable { reason } => row(
            &mut h,
            "ingestion CPU and memory",
            format!("unavailable: {reason}"),
        ),
    }
    if let Some(ramp) = &r.ramp {
        row(
            &mut h,
            "highest rate held",
            format!(
                "{} — {}",
                opt(ramp.highest_rate_held, |r| format!("{r} points/s")),
                ramp.stop_reason
            ),
        );
    }
    h.push_str("</table>\n<h2>Criteria</h2>\n<table><tr><th>criterion</th><th>target</th><th>actual</th><th></th></tr>\n");
    for c in &r.criteria {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&c.name),
            esc(&c.target),
            esc(&c.actual),
            if c.pass { "pass" } else { "fail" },
            if c.pass { "PASS" } else { "FAIL" }
        );
    }
    h.push_str("</table>\n");
    if !r.warnings.is_empty() {
        h.push_str("<h2>Warnings</h2>\n<ul class=\"warn\">\n");
        for w in &r.warnings {
            let _ = writeln!(h, "<li>{}</li>", esc(w));
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Latency over time</h2>\n<p class=\"sub\">Publish→commit percentiles of the points committed in each second (exact: the difference of consecutive histogram snapshots); the dashed line is the 10 ms target.</p>\n");
    h.push_str(&figure(latency_svg(&r.series)));
    h.push_str("<h2>Throughput over time</h2>\n<p class=\"sub\">Points per second published by the harness, and committed by ingestion; the dashed line is the rate asked for.</p>\n");
    h.push_str(&figure(throughput_svg(&r.series)));
    h.push_str("<h2>Ingestion CPU and memory</h2>\n");
    let cpu_label = match &r.process {
        ProcessReport::Available { cpu_window_s, .. } if *cpu_window_s > 1.0 => {
            format!("CPU (cores, over {cpu_window_s} s)")
        }
        _ => "CPU (cores)".to_owned(),
    };
    h.push_str(&figure(single_svg(
        &r.series,
        &cpu_label,
        |s| s.cpu_cores,
        &RGBColor(0x94, 0x67, 0xbd),
    )));
    h.push_str(&figure(single_svg(
        &r.series,
        "resident memory (MiB)",
        |s| s.rss_bytes.map(|b| b / 1_048_576.0),
        &RGBColor(0x8a, 0x5a, 0x00),
    )));

    if let Some(ramp) = &r.ramp {
        h.push_str("<h2>Ramp stages</h2>\n<table><tr><th>#</th><th>kind</th><th>rate</th><th>window</th><th>achieved</th><th>committed</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>backlog</th><th></th><th>why</th></tr>\n");
        for s in &ramp.stages {
            let l = s.latency;
            let pct = |f: fn(&Latency) -> f64| opt(l.as_ref(), |l| ms(f(l)));
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{:?}</td><td>{}</td><td>{:.0}–{:.0} s</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                s.index,
                s.kind,
                s.rate,
                s.window_start_s,
                s.window_end_s,
                s.achieved_rate,
                opt(s.committed_rate, |c| format!("{c:.0}")),
                pct(|l| l.p50_ms),
                pct(|l| l.p95_ms),
                pct(|l| l.p99_ms),
                pct(|l| l.max_ms),
                opt(s.backlog_points, |b| b.to_string()),
                if s.held { "pass" } else { "fail" },
                if s.held { "held" } else { "failed" },
                esc(&s.reason)
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>How this was measured</h2>\n<ul>\n");
    for m in &r.method {
        let _ = writeln!(h, "<li>{}</li>", esc(m));
    }
    h.push_str("</ul>\n<h2>Run</h2>\n<table class=\"kv\">\n");
    row(&mut h, "run id", r.plan.run_id.clone());
    row(&mut h, "MQTT broker", r.targets.mqtt.clone());
    row(&mut h, "PostgreSQL", r.targets.postgres.clone());
    row(
        &mut h,
        "ingestion",
        r.targets.ingestion.clone().unwrap_or_else(|| "–".into()),
    );
    row(
        &mut h,
        "sessions",
        format!(
            "{} × {} points (frames of {}), over {} connections",
            r.plan.sessions, r.plan.points_per_session, r.plan.frame, p.connections
        ),
    );
    row(
        &mut h,
        "source",
        format!("{}: {}", r.source.kind, r.source.detail),
    );
    if !r.source.logs.is_empty() {
        row(&mut h, "roast logs", r.source.logs.join(", "));
    }
    row(
        &mut h,
        "broker acknowledgements",
        format!(
            "all {} within {:.2} s after the last publish; {} reconnects",
            if p.all_acked {
                "received"
            } else {
                "NOT received"
            },
            p.ack_wait_secs,
            p.reconnects
        ),
    );
    row(
        &mut h,
        "verification",
        format!(
            "{:?} after {:.1} s",
            r.verification.settled, r.verification.waited_secs
        ),
    );
    h.push_str("</table>\n</body></html>\n");
    h
}

fn figure(svg: Result<String, String>) -> String {
    match svg {
        Ok(svg) => format!("<figure>{svg}</figure>\n"),
        Err(e) => format!("<p class=\"warn\">plot unavailable: {}</p>\n", esc(&e)),
    }
}

const CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}\
.sub{color:#555}.pass{color:#11772d;font-weight:600}.fail{color:#b3261e;font-weight:600}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
.kv th{font-weight:500;color:#444;white-space:nowrap}.warn li,p.warn{color:#8a4b00}\
figure{margin:.5em 0}svg{max-width:100%;height:auto}code{font-size:.95em}";

/// Consecutive runs of present values: a missing second breaks the line instead of being
/// drawn as zero.
fn runs(series: &[Second], value: impl Fn(&Second) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![];
    let mut current = vec![];
    for s in series {
        match value(s) {
            Some(v) if v.is_finite() => current.push((s.t_s, v)),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// What a line plots of each second.
type Value<'a> = Box<dyn Fn(&Second) -> Option<f64> + 'a>;

struct Line<'a> {
    label: &'a str,
    color: RGBColor,
    dashed: bool,
    value: Value<'a>,
}

/// The y axis of a chart.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// From 0, to at least `top` (more if the data goes higher).
    Linear { top: f64, decimals: usize },
    /// Logarithmic, covering at least `low..top`: latency from sub-millisecond to stalls of
    /// seconds on one readable axis.
    Log { low: f64, top: f64 },
}

/// A line chart of the series: x in seconds since the start.
fn chart(
    series: &[Second],
    y_desc: &str,
    scale: Scale,
    lines: &[Line<'_>],
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let x_max = series.iter().map(|s| s.t_s).fold(1.0, f64::max);
        let values = || {
            lines
                .iter()
                .flat_map(|l| series.iter().filter_map(|s| (l.value)(s)))
                .filter(|v| v.is_finite())
        };
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70);
        match scale {
            Scale::Linear { top, decimals } => {
                let top = values().fold(top, f64::max) * 1.08;
                let mut chart = builder
                    .build_cartesian_2d(0f64..x_max, 0f64..top)
                    .map_err(|e| e.to_string())?;
                draw_lines(&mut chart, series, y_desc, decimals, lines)?;
            }
            Scale::Log { low, top } => {
                let low = values().filter(|v| *v > 0.0).fold(low, f64::min) * 0.9;
                let top = values().fold(top, f64::max) * 1.2;
                let mut chart = builder
                    .build_cartesian_2d(0f64..x_max, (low..top).log_scale())
                    .map_err(|e| e.to_string())?;
                draw_lines(&mut chart, series, y_desc, 1, lines)?;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_lines<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Second],
    y_desc: &str,
    decimals: usize,
    lines: &[Line<'_>],
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let text = ("sans-serif", 14);
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc(y_desc)
        .label_style(text)
        .axis_desc_style(text)
        .y_label_formatter(&|v: &f64| format!("{v:.decimals$}"))
        .x_label_formatter(&|v: &f64| format!("{v:.0}"))
        .light_line_style(RGBColor(0xf3, 0xf3, 0xf3))
        .draw()
        .map_err(|e| e.to_string())?;
    for line in lines {
        let style = line.color.stroke_width(2);
        let mut first = true;
        for run in runs(series, &line.value) {
            let drawn = if line.dashed {
                chart.draw_series(DashedLineSeries::new(run, 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(run, style))
            }
            .map_err(|e| e.to_string())?;
            if first {
                let color = line.color;
                drawn.label(line.label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(text)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(0xcc, 0xcc, 0xcc))
        .draw()
        .map_err(|e| e.to_string())
}

fn latency_svg(series: &[Second]) -> Result<String, String> {
    let pct = |f: fn(&Latency) -> f64| move |s: &Second| s.latency.as_ref().map(f);
    chart(
        series,
        "publish→commit (ms, log scale)",
        Scale::Log {
            low: 1.0,
            top: P95_TARGET_MS * 2.0,
        },
        &[
            Line {
                label: "p50",
                color: RGBColor(0x1f, 0x77, 0xb4),
                dashed: false,
                value: Box::new(pct(|l| l.p50_ms)),
            },
            Line {
                label: "p95",
                color: RGBColor(0xff, 0x7f, 0x0e),
                dashed: false,
                value: Box::new(pct(|l| l.p95_ms)),
            },
            Line {
                label: "p99",
                color: RGBColor(0xd6, 0x27, 0x28),
                dashed: false,
                value: Box::new(pct(|l| l.p99_ms)),
            },
            Line {
                label: "10 ms target",
                color: BLACK,
                dashed: true,
                value: Box::new(|_| Some(P95_TARGET_MS)),
            },
        ],
    )
}

fn throughput_svg(series: &[Second]) -> Result<String, String> {
    chart(
        series,
        "points per second",
        Scale::Linear {
            top: 10.0,
            decimals: 0,
        },
        &[
            Line {
                label: "published",
                color: RGBColor(0x1f, 0x77, 0xb4),
                dashed: false,
                value: Box::new(|s| Some(s.published_rate)),
            },
            Line {
                label: "committed",
                color: RGBColor(0x2c, 0xa0, 0x2c),
                dashed: false,
                value: Box::new(|s| s.committed_rate),
            },
            Line {
                label: "target",
                color: RGBColor(0x88, 0x88, 0x88),
                dashed: true,
                value: Box::new(|s| Some(s.target_rate as f64)),
            },
        ],
    )
}

fn single_svg(
    series: &[Second],
    label: &str,
    value: fn(&Second) -> Option<f64>,
    color: &RGBColor,
) -> Result<String, String> {
    chart(
        series,
        label,
        Scale::Linear {
            top: 0.1,
            decimals: 2,
        },
        &[Line {
            label,
            color: *color,
            dashed: false,
            value: Box::new(value),
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::measured;

    #[test]
    fn the_page_is_self_contained_and_escaped() {
        let mut m = measured();
        m.targets.mqtt = "mqtt://<script>alert(1)</script>".into();
        let html = render(&Report::new(m));
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<span class=\"pass\">PASS</span>"));
        // Four plots, inline.
        assert_eq!(html.matches("<svg").count(), 4, "{html}");
        assert!(html.contains("10 ms target"));
        assert!(
            !html.contains("<script"),
            "nothing executable, nothing injected"
        );
        assert!(html.contains("&lt;script&gt;"));
        // Nothing fetched: no external reference of any kind.
        for needle in ["https://", "src=", "<link", "@import", "url("] {
            assert!(!html.contains(needle), "{needle} in the page");
        }
        assert!(html.contains("How this was measured"));
    }

    #[test]
    fn missing_seconds_break_the_line() {
        let mut m = measured();
        let mut gap = m.series[0].clone();
        gap.t_s = 1.5;
        gap.latency = None;
        m.series.insert(1, gap);
        let r = runs(&m.series, |s| s.latency.map(|l| l.p95_ms));
        assert_eq!(r.len(), 2);
        // An empty series still renders a page.
        m.series.clear();
        assert!(render(&Report::new(m)).contains("</html>"));
    }
}
