//! `rangedb bench --report FILE`: a run drawn, for looking at rather than reading.
//!
//! One self-contained file (no script, no asset from the network): throughput per
//! second, latency per second (p50, p99 and max), and the latency distribution
//! (latency against percentile, on a scale that spreads the tail out, as
//! HdrHistogram's plots do), then the summary table and the run's parameters.
//! `FILE.html` is a page holding the charts as inline SVG; `FILE.svg` is the charts
//! alone, one SVG document.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// What a report shows.
pub struct RunReport<'a> {
    /// A one-line title: target, workload, clients.
    pub title: String,
    /// (name, value) pairs shown under the charts.
    pub parameters: Vec<(String, String)>,
    /// The summary table's header and its row.
    pub summary: (Vec<String>, Vec<String>),
    /// Per measured second: that second's latencies (µs).
    pub seconds: &'a [Histogram<u64>],
    /// Every measured latency (µs).
    pub overall: &'a Histogram<u64>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;
const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#7f7f7f"];

/// The report for `path`: an SVG document when it ends in `.svg`, else an HTML page.
pub fn render(report: &RunReport, path: &std::path::Path) -> String {
    let charts = [
        throughput_chart(report.seconds),
        latency_chart(report.seconds),
        distribution_chart(report.overall),
    ];
    let svg_file = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if svg_file {
        let total = HEIGHT * charts.len() as f64;
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{total}\" \
             font-family=\"sans-serif\" font-size=\"11\">\n<title>{}</title>\n",
            escape(&report.title)
        );
        for (i, chart) in charts.iter().enumerate() {
            let _ =
                writeln!(out, "<g transform=\"translate(0,{})\">{chart}</g>", HEIGHT * i as f64);
        }
        out.push_str("</svg>\n");
        return out;
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{0}</title>\n<style>\
         body{{font-family:sans-serif;margin:24px;color:#222}} \
         table{{border-collapse:collapse;margin:12px 0}} \
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}} \
         th{{background:#f3f3f3}} td.k{{text-align:left}} svg{{display:block;margin:8px 0}}\
         </style></head><body>\n<h2>{0}</h2>\n",
        escape(&report.title)
    );
    out.push_str("<table><tr>");
    for head in &report.summary.0 {
        let _ = write!(out, "<th>{}</th>", escape(head));
    }
    out.push_str("</tr><tr>");
    for cell in &report.summary.1 {
        let _ = write!(out, "<td>{}</td>", escape(cell));
    }
    out.push_str("</tr></table>\n");
    for chart in &charts {
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             font-family=\"sans-serif\" font-size=\"11\">{chart}</svg>"
        );
    }
    out.push_str("<table>");
    for (name, value) in &report.parameters {
        let _ =
            write!(out, "<tr><td class=\"k\">{}</td><td>{}</td></tr>", escape(name), escape(value));
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

fn throughput_chart(seconds: &[Histogram<u64>]) -> String {
    let ops: Vec<f64> = seconds.iter().map(|h| h.len() as f64).collect();
    let series = [("ops/s", points(&ops))];
    line_chart("Throughput (operations per second)", "s", &series, Scale::Linear, seconds.len())
}

fn latency_chart(seconds: &[Histogram<u64>]) -> String {
    let at = |q: f64| -> Vec<f64> {
        seconds
            .iter()
            .map(|h| if h.is_empty() { f64::NAN } else { h.value_at_quantile(q) as f64 / 1000.0 })
            .collect()
    };
    let max: Vec<f64> = seconds
        .iter()
        .map(|h| if h.is_empty() { f64::NAN } else { h.max() as f64 / 1000.0 })
        .collect();
    let series =
        [("p50 ms", points(&at(0.5))), ("p99 ms", points(&at(0.99))), ("max ms", points(&max))];
    line_chart("Latency per second (ms, log scale)", "s", &series, Scale::Log, seconds.len())
}

/// Latency at each percentile, the x axis spread as 1 / (1 - q): 90, 99, 99.9 and
/// 99.99 are equally far apart.
fn distribution_chart(overall: &Histogram<u64>) -> String {
    let mut title = String::from("Latency distribution (ms, log scale, by percentile)");
    if overall.is_empty() {
        title.push_str(": no operation completed");
    }
    let mut pts = Vec::new();
    if !overall.is_empty() {
        // 0 .. 4 on the x axis: log10(1 / (1 - q)) from q = 0 to q = 0.9999.
        for step in 0..=200 {
            let x = f64::from(step) / 50.0;
            let q = 1.0 - 10f64.powf(-x);
            pts.push((x, overall.value_at_quantile(q) as f64 / 1000.0));
        }
    }
    let mut out = frame(&title);
    let (lo, hi) = log_bounds(pts.iter().map(|p| p.1));
    let xs = |x: f64| LEFT + x / 4.0 * (WIDTH - LEFT - RIGHT);
    let ys = |v: f64| y_of(v, lo, hi, Scale::Log);
    for (x, label) in [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%")] {
        let anchor = if x == 4.0 { "end" } else { "middle" };
        let _ = write!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"{anchor}\">{label}</text>",
            xs(x),
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 14.0
        );
    }
    y_axis(&mut out, lo, hi, Scale::Log);
    if !pts.is_empty() {
        let path: Vec<String> =
            pts.iter().map(|(x, v)| format!("{:.1},{:.1}", xs(*x), ys(*v))).collect();
        let _ = write!(
            out,
            "<polyline class=\"series\" data-name=\"latency\" fill=\"none\" stroke=\"{}\" \
             stroke-width=\"1.5\" points=\"{}\"/>",
            COLORS[0],
            path.join(" ")
        );
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log,
}

/// (second, value) for each second that has a value.
fn points(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as f64 + 1.0, *v))
        .collect()
}

fn line_chart(
    title: &str,
    unit: &str,
    series: &[(&str, Vec<(f64, f64)>)],
    scale: Scale,
    seconds: usize,
) -> String {
    let mut out = frame(title);
    let values = series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1));
    let (lo, hi) = match scale {
        Scale::Log => log_bounds(values),
        Scale::Linear => (0.0, nice_ceiling(values.fold(0.0, f64::max))),
    };
    let span = seconds.max(1) as f64;
    let xs = |x: f64| LEFT + x / span * (WIDTH - LEFT - RIGHT);
    let step = ((span / 10.0).ceil() as usize).max(1);
    for second in (0..=seconds).step_by(step) {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{second}{}</text>",
            xs(second as f64),
            HEIGHT - BOTTOM + 14.0,
            if second == 0 { unit } else { "" }
        );
    }
    y_axis(&mut out, lo, hi, scale);
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, v)| format!("{:.1},{:.1}", xs(*x), y_of(*v, lo, hi, scale)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"series\" data-name=\"{name}\" fill=\"none\" stroke=\"{color}\" \
             stroke-width=\"1.5\" points=\"{}\"/>",
            path.join(" ")
        );
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{color}\">{name}</text>",
            WIDTH - RIGHT - 60.0 * (series.len() - i) as f64,
            TOP - 8.0
        );
    }
    out
}

/// The title and the plot's border.
fn frame(title: &str) -> String {
    format!(
        "<text x=\"{LEFT}\" y=\"16\" font-size=\"13\" font-weight=\"bold\">{}</text>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#999\"/>",
        escape(title),
        WIDTH - LEFT - RIGHT,
        HEIGHT - TOP - BOTTOM
    )
}

fn y_of(value: f64, lo: f64, hi: f64, scale: Scale) -> f64 {
    let fraction = match scale {
        Scale::Linear => (value - lo) / (hi - lo).max(f64::MIN_POSITIVE),
        Scale::Log => {
            let value = value.max(lo);
            (value.log10() - lo.log10()) / (hi.log10() - lo.log10()).max(f64::MIN_POSITIVE)
        }
    };
    let bottom = HEIGHT - BOTTOM;
    bottom - fraction.clamp(0.0, 1.0) * (bottom - TOP)
}

fn y_axis(out: &mut String, lo: f64, hi: f64, scale: Scale) {
    let ticks: Vec<f64> = match scale {
        Scale::Linear => (0..=4).map(|i| lo + (hi - lo) * f64::from(i) / 4.0).collect(),
        Scale::Log => {
            let mut ticks = Vec::new();
            let mut tick = lo;
            while tick <= hi * 1.000_001 {
                ticks.push(tick);
                tick *= 10.0;
            }
            ticks
        }
    };
    for tick in ticks {
        let y = y_of(tick, lo, hi, scale);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(tick)
        );
    }
}

/// Powers of ten around the values (at least one decade).
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for value in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(value);
        hi = hi.max(value);
    }
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|v| *v >= value).unwrap_or(10.0 * power)
}

fn label(value: f64) -> String {
    if value >= 1000.0 {
        let thousands = format!("{:.1}", value / 1000.0);
        format!("{}k", thousands.trim_end_matches(".0"))
    } else if value >= 1.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
        for v in values {
            h.record(*v).unwrap();
        }
        h
    }

    fn report_for(seconds: &[Histogram<u64>], overall: &Histogram<u64>, path: &str) -> String {
        let report = RunReport {
            title: "rangedb put <64 clients>".into(),
            parameters: vec![("clients".into(), "64".into())],
            summary: (vec!["ops/s".into()], vec!["3".into()]),
            seconds,
            overall,
        };
        render(&report, std::path::Path::new(path))
    }

    /// The `points` attribute of the polyline named `name`.
    fn series(doc: &str, name: &str) -> Vec<(f64, f64)> {
        let marker = format!("data-name=\"{name}\"");
        let at = doc.find(&marker).unwrap_or_else(|| panic!("no series {name}"));
        let rest = &doc[at..];
        let start = rest.find("points=\"").unwrap() + 8;
        let end = start + rest[start..].find('"').unwrap();
        rest[start..end]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_slow_second_shows_as_a_dip_in_throughput_and_a_peak_in_latency() {
        // Second 2 is a stall: few operations, slow ones.
        let seconds =
            [histogram(&[1000, 1100, 1200]), histogram(&[50_000]), histogram(&[900, 1000, 1000])];
        let overall = histogram(&[1000, 1100, 1200, 50_000, 900, 1000, 1000]);
        let page = report_for(&seconds, &overall, "run.html");
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("rangedb put &lt;64 clients&gt;"), "title escaped");
        let ops = series(&page, "ops/s");
        assert_eq!(ops.len(), 3);
        // SVG y grows downwards: fewer operations draw lower (a larger y).
        assert!(ops[1].1 > ops[0].1 && ops[1].1 > ops[2].1, "{ops:?}");
        let p99 = series(&page, "p99 ms");
        assert!(p99[1].1 < p99[0].1 && p99[1].1 < p99[2].1, "{p99:?}");
        // The distribution rises to the stall at the top percentiles.
        let latency = series(&page, "latency");
        assert_eq!(latency.len(), 201);
        assert!(latency.last().unwrap().1 < latency[0].1, "{:?}", (latency[0], latency.last()));
        assert!(!page.contains("NaN") && !page.contains("inf"));
    }

    #[test]
    fn an_svg_file_gets_one_svg_document_and_an_empty_run_draws_no_line() {
        let empty = histogram(&[]);
        let doc = report_for(&[empty.clone(), empty.clone()], &empty, "run.SVG");
        assert!(doc.starts_with("<svg xmlns="));
        assert_eq!(doc.matches("<svg").count(), 1);
        assert!(doc.contains("no operation completed"));
        assert!(series(&doc, "p50 ms").is_empty());
        assert!(!doc.contains("NaN") && !doc.contains("inf"));
    }
}
