//! `loadgen chart`: one SVG of a bench/run (bench/last-run.svg).
//!
//! - On top, a panel per series written by `--series` (bench/run passes both S3 runs: the
//!   overload and the carried rate): offered/s and accepted/s against the left axis, the p99
//!   latency of each second's answers against the right one.
//! - Below, a bar per figure of the results file's last `summary ` line, beside PostgreSQL's
//!   ceilings (pgbench) and the floors, each labelled with its value. A figure that is `na` or
//!   missing has no bar; the footnote lists it.
//! - S4 (our code on the in-memory adapters, several times the others) is not a bar: the
//!   footnote gives it, so the bars keep a scale on which the others can be read.
//!
//! The title carries the run's date and commit when the results file's header gives them
//! (`# bench/run <date>`, `commit: <hash>`). Drawn by plotters' SVG backend: text is SVG
//! `<text>`, laid out by whatever shows the file, so no font library is involved.

use std::collections::BTreeMap;
use std::fmt::Display;

use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::args::ChartOptions;
use crate::series::{self, Row};

const FONT: &str = "sans-serif";
const WIDTH: u32 = 1200;
/// Height of the title band.
const TITLE_HEIGHT: u32 = 50;
/// Height of each series panel.
const SERIES_HEIGHT: u32 = 320;
/// Height of the bar panel, its footnote included.
const BARS_HEIGHT: u32 = 520;
/// Height of the bar panel's footnote.
const NOTE_HEIGHT: u32 = 50;
/// Width of a bar's slot on the bar panel's x axis.
const SLOT: i32 = 100;
/// Room above the highest value for the legend and the value labels.
const HEADROOM: f64 = 1.3;

const OFFERED: RGBColor = RGBColor(190, 190, 190);
const ACCEPTED: RGBColor = RGBColor(44, 160, 44);
const P99: RGBColor = RGBColor(214, 39, 40);

/// The summary key of S4, given in the footnote rather than as a bar.
const S4_KEY: &str = "s4_accepted_per_s";

/// What a bar stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A figure this run measured.
    Figure,
    /// What PostgreSQL alone does on this machine (pgbench).
    Ceiling,
    /// The least a figure may read.
    Floor,
}

impl Kind {
    fn legend(self) -> &'static str {
        match self {
            Kind::Figure => "measured",
            Kind::Ceiling => "ceiling: PostgreSQL alone (pgbench tps)",
            Kind::Floor => "floor",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Kind::Figure => RGBColor(31, 119, 180),
            Kind::Ceiling => RGBColor(150, 150, 150),
            Kind::Floor => RGBColor(255, 127, 14),
        }
    }
}

/// The bars, left to right: summary key, label, kind. Each figure stands beside its ceiling
/// or floor.
const BARS: [(&str, &str, Kind); 11] = [
    ("hot_row_tps", "hot-row tps", Kind::Ceiling),
    ("tpcb_tps", "TPC-B tps", Kind::Ceiling),
    ("s1_accepted_per_s", "S1 accepted", Kind::Figure),
    ("s1_floor_per_s", "S1 floor", Kind::Floor),
    ("s2_batch1_per_s", "S2 batch 1", Kind::Figure),
    ("s2_batched_per_s", "S2 batched", Kind::Figure),
    ("s2_floor_per_s", "S2 floor", Kind::Floor),
    ("s2_hooked_per_s", "S2W hooked", Kind::Figure),
    ("s2m_mixed_per_s", "S2M mixed", Kind::Figure),
    ("s3_sustained_per_s", "S3 sustained", Kind::Figure),
    ("s3_carried_per_s", "S3 carried", Kind::Figure),
];

/// What the chart reads from bench/run's results file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Results {
    /// From the `# bench/run <date>` header line.
    pub(crate) date: Option<String>,
    /// From the `commit: <hash>` header line.
    pub(crate) commit: Option<String>,
    /// The last `summary ` line's `key=value` pairs, as written (`na` included).
    pub(crate) summary: BTreeMap<String, String>,
}

impl Results {
    /// Reads the header lines and the last line starting with `summary `.
    pub(crate) fn parse(text: &str) -> Result<Results, String> {
        let header = |prefix: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        let summary = text
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix("summary "))
            .ok_or("no line starting with `summary ` (did bench/run finish?)")?;
        Ok(Results {
            date: header("# bench/run "),
            commit: header("commit: "),
            summary: summary
                .split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
    }

    /// The figure under `key`; `None` when it is missing, `na` or not a number.
    pub(crate) fn figure(&self, key: &str) -> Option<f64> {
        self.summary
            .get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    }

    /// The chart's title: the date and commit the header gave.
    fn title(&self) -> String {
        let mut title = "Atomic bench/run".to_owned();
        if let Some(commit) = &self.commit {
            title.push_str(&format!(", commit {commit}"));
        }
        if let Some(date) = &self.date {
            title.push_str(&format!(", {date}"));
        }
        title
    }
}

/// One bar: its label, value and kind.
#[derive(Debug, Clone, PartialEq)]
struct Bar {
    label: &'static str,
    value: f64,
    kind: Kind,
}

/// The bars the summary has figures for, in [`BARS`] order, and the labels of those it has none
/// for.
fn bars(results: &Results) -> (Vec<Bar>, Vec<&'static str>) {
    let mut drawn = Vec::new();
    let mut missing = Vec::new();
    for (key, label, kind) in BARS {
        match results.figure(key) {
            Some(value) => drawn.push(Bar { label, value, kind }),
            None => missing.push(label),
        }
    }
    (drawn, missing)
}

/// One series panel's data: its title and rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    /// The panel's title (the NAME of `--series NAME=FILE`).
    pub(crate) name: String,
    /// One row per second.
    pub(crate) rows: Vec<Row>,
}

/// Reads the results and the series, draws the chart and writes it; returns what it wrote, in
/// words.
pub(crate) fn run(options: &ChartOptions) -> Result<String, String> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let results = Results::parse(&read(&options.results)?)
        .map_err(|e| format!("{}: {e}", options.results.display()))?;
    let mut all = Vec::with_capacity(options.series.len());
    for (name, path) in &options.series {
        let rows =
            series::parse_csv(&read(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
        all.push(Series {
            name: name.clone(),
            rows,
        });
    }
    let svg = render(&results, &all)?;
    std::fs::write(&options.out, svg)
        .map_err(|e| format!("cannot write {}: {e}", options.out.display()))?;
    Ok(format!(
        "wrote {} ({} series panel(s), {} bar(s))",
        options.out.display(),
        all.len(),
        bars(&results).0.len()
    ))
}

/// The area type every panel draws on.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Turns a plotters error into one that says what was being drawn.
fn drawing<E: Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("drawing {what}: {e}")
}

/// The whole chart as SVG text: the title, a panel per series, then the bars.
pub(crate) fn render(results: &Results, series: &[Series]) -> Result<String, String> {
    let panels = u32::try_from(series.len()).map_err(|_| "too many series".to_owned())?;
    let height = TITLE_HEIGHT + SERIES_HEIGHT * panels + BARS_HEIGHT;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing("the background"))?;
        let body = root
            .titled(&results.title(), (FONT, 26))
            .map_err(drawing("the title"))?;
        let (top, bottom) = body.split_vertically(SERIES_HEIGHT * panels);
        if panels > 0 {
            for (area, s) in top.split_evenly((series.len(), 1)).iter().zip(series) {
                series_panel(area, s)?;
            }
        }
        bars_panel(&bottom, results)?;
        root.present().map_err(drawing("the file"))?;
    }
    Ok(svg)
}

/// A series panel: offered/s and accepted/s on the left axis, p99 ms on the right. Offered is
/// drawn wide and pale under accepted, so both show where they are equal.
fn series_panel(area: &Area<'_>, series: &Series) -> Result<(), String> {
    let rows = &series.rows;
    let seconds = rows.len().max(1) as u64;
    let rate_max = rows.iter().map(|r| r.offered.max(r.accepted)).max();
    let rate_max = rate_max.unwrap_or(0).max(1) as f64;
    let p99_max = rows.iter().filter_map(|r| r.p99_ms).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(series_caption(series), (FONT, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0..seconds, 0.0..rate_max * HEADROOM)
        .map_err(drawing("a series panel"))?
        .set_secondary_coord(0..seconds, 0.0..p99_max * HEADROOM);
    chart
        .configure_mesh()
        .x_desc("second of the load")
        .y_desc("payments/s")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(drawing("a series panel's axes"))?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 ms")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(drawing("a series panel's p99 axis"))?;
    let line = |style: ShapeStyle| {
        move |(x, y): (i32, i32)| PathElement::new(vec![(x, y), (x + 20, y)], style)
    };
    let points = |value: fn(&Row) -> u64| rows.iter().map(move |r| (r.second, value(r) as f64));
    let offered = OFFERED.stroke_width(5);
    chart
        .draw_series(LineSeries::new(points(|r| r.offered), offered))
        .map_err(drawing("offered/s"))?
        .label("offered/s (sent)")
        .legend(line(offered));
    let accepted = ACCEPTED.stroke_width(2);
    chart
        .draw_series(LineSeries::new(points(|r| r.accepted), accepted))
        .map_err(drawing("accepted/s"))?
        .label("accepted/s (202)")
        .legend(line(accepted));
    let p99 = rows
        .iter()
        .filter_map(|r| r.p99_ms.map(|ms| (r.second, ms)));
    let p99_style = P99.stroke_width(2);
    chart
        .draw_secondary_series(LineSeries::new(p99, p99_style))
        .map_err(drawing("p99"))?
        .label("p99 ms (right axis)")
        .legend(line(p99_style));
    legend(chart.configure_series_labels(), "a series panel's legend")
}

/// A series panel's caption: its name, what was offered and accepted, and the backlog's peak.
fn series_caption(series: &Series) -> String {
    let rows = &series.rows;
    let offered: u64 = rows.iter().map(|r| r.offered).sum();
    let accepted: u64 = rows.iter().map(|r| r.accepted).sum();
    let mut caption = format!(
        "{}: {} offered, {} accepted in {} s",
        series.name,
        thousands(offered as f64),
        thousands(accepted as f64),
        rows.len()
    );
    if let Some(peak) = rows.iter().filter_map(|r| r.backlog).max() {
        caption.push_str(&format!("; backlog peak {}", thousands(peak as f64)));
    }
    caption
}

/// The bar panel: every figure beside its ceilings and floors, then the footnote.
fn bars_panel(area: &Area<'_>, results: &Results) -> Result<(), String> {
    let (bars, missing) = bars(results);
    let (plot, note) = area.split_vertically(BARS_HEIGHT - NOTE_HEIGHT);
    note.draw_text(
        &footnote(results, &missing),
        &(FONT, 15).into_text_style(&note),
        (20, 10),
    )
    .map_err(drawing("the footnote"))?;
    let title = "Every figure of the run, per second, beside its ceilings and floors";
    if bars.is_empty() {
        let text = format!("{title}: the summary line has none");
        return plot
            .draw_text(&text, &(FONT, 18).into_text_style(&plot), (20, 20))
            .map_err(drawing("the bar panel"));
    }
    let mut chart = bar_axes(&plot, title, &bars)?;
    for kind in [Kind::Figure, Kind::Ceiling, Kind::Floor] {
        draw_bars(&mut chart, &bars, kind)?;
    }
    let value_style =
        TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            EmptyElement::at((slot_start(i) + SLOT / 2, b.value))
                + Text::new(thousands(b.value), (0, -4), value_style.clone())
        }))
        .map_err(drawing("the bar labels"))?;
    legend(chart.configure_series_labels(), "the bar panel's legend")
}

/// The bar panel's chart: one slot per bar, named under its centre, per second up the side.
type BarChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<WithKeyPoints<RangedCoordi32>, RangedCoordf64>>;

/// Draws the bar panel's axes and returns its chart.
fn bar_axes<'a, 'b>(
    plot: &'a Area<'b>,
    title: &str,
    bars: &[Bar],
) -> Result<BarChart<'a, 'b>, String> {
    // x counts in hundredths of a slot: integers, so that plotters labels the key points (the
    // slots' centres) with our formatter; f64 key points cannot take one.
    let slots = i32::try_from(bars.len() * SLOT as usize).map_err(|_| "too many bars")?;
    let centers = (0..slots)
        .step_by(SLOT as usize)
        .map(|x| x + SLOT / 2)
        .collect();
    let top = bars.iter().map(|b| b.value).fold(1.0, f64::max) * HEADROOM;
    let mut chart = ChartBuilder::on(plot)
        .caption(title, (FONT, 18))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..slots).with_key_points(centers), 0.0..top)
        .map_err(drawing("the bar panel"))?;
    let label_of = |x: &i32| {
        usize::try_from(x / SLOT)
            .ok()
            .and_then(|i| bars.get(i))
            .map_or(String::new(), |b| b.label.to_owned())
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label_of)
        .x_label_style((FONT, 14))
        .y_desc("per second")
        .y_label_formatter(&|v| thousands(*v))
        .draw()
        .map_err(drawing("the bar panel's axes"))?;
    Ok(chart)
}

/// Draws the bars of one kind, in that kind's colour, with its legend entry.
fn draw_bars(chart: &mut BarChart<'_, '_>, bars: &[Bar], kind: Kind) -> Result<(), String> {
    let of_kind = bars.iter().enumerate().filter(|(_, b)| b.kind == kind);
    if of_kind.clone().next().is_none() {
        return Ok(());
    }
    let rectangles = of_kind.map(|(i, b)| {
        let x = slot_start(i);
        let corners = [(x + SLOT * 15 / 100, 0.0), (x + SLOT * 85 / 100, b.value)];
        Rectangle::new(corners, kind.color().filled())
    });
    chart
        .draw_series(rectangles)
        .map_err(drawing("the bars"))?
        .label(kind.legend())
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], kind.color().filled()));
    Ok(())
}

/// Draws a panel's legend, the same in every panel: upper right, on a pale box.
fn legend<'a, 'b, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    labels: plotters::chart::SeriesLabelStyle<'a, 'b, DB, CT>,
    what: &'static str,
) -> Result<(), String> {
    let mut labels = labels;
    labels
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(drawing(what))
}

/// Where bar `i`'s slot starts on the x axis.
fn slot_start(i: usize) -> i32 {
    i32::try_from(i).map_or(i32::MAX, |i| i.saturating_mul(SLOT))
}

/// The bar panel's footnote: S4 (not a bar) and the figures the summary has none for.
fn footnote(results: &Results, missing: &[&str]) -> String {
    let s4 = match results.figure(S4_KEY) {
        Some(v) => format!(
            "S4 in-memory accepted/s = {} (our own code's ceiling: not a bar, it would flatten the rest)",
            thousands(v)
        ),
        None => "S4 in-memory: no figure".to_owned(),
    };
    if missing.is_empty() {
        s4
    } else {
        format!("{s4}. No figure (na): {}", missing.join(", "))
    }
}

/// A value rounded to a whole number with thousands separators (`12,345`); below 10, one
/// decimal (`2.5`).
fn thousands(value: f64) -> String {
    if value.abs() < 10.0 && value.fract() != 0.0 {
        return format!("{value:.1}");
    }
    let whole = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(whole.len() + whole.len() / 3 + 1);
    if value < 0.0 && whole != "0" {
        out.push('-');
    }
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = "\
# bench/run 2026-12-01T10:00:00Z
machine: 2 cores
commit: abc1234

== results (ratios measured in this run)
summary s1_accepted_per_s=1363.2 s2_batch1_per_s=486 s2_batched_per_s=2480 s2_hooked_per_s=na \
s3_sustained_per_s=1504.9 s3_carried_per_s=952.0 s4_accepted_per_s=15518 hot_row_tps=1961.3 \
tpcb_tps=1781.0 s1_floor_per_s=na
";

    #[test]
    fn the_last_summary_line_with_na_and_missing_keys() {
        let text = format!("summary s1_accepted_per_s=1\n{RESULTS}");
        let r = Results::parse(&text).unwrap();
        assert_eq!(r.date.as_deref(), Some("2026-12-01T10:00:00Z"));
        assert_eq!(r.commit.as_deref(), Some("abc1234"));
        assert_eq!(r.figure("s1_accepted_per_s"), Some(1363.2));
        assert_eq!(r.summary["s2_hooked_per_s"], "na");
        assert_eq!(r.figure("s2_hooked_per_s"), None);
        assert_eq!(r.figure("s2_floor_per_s"), None);
        assert_eq!(
            r.title(),
            "Atomic bench/run, commit abc1234, 2026-12-01T10:00:00Z"
        );
        let (drawn, missing) = bars(&r);
        let labels: Vec<_> = drawn.iter().map(|b| b.label).collect();
        assert_eq!(
            labels,
            [
                "hot-row tps",
                "TPC-B tps",
                "S1 accepted",
                "S2 batch 1",
                "S2 batched",
                "S3 sustained",
                "S3 carried"
            ]
        );
        assert_eq!(missing, ["S1 floor", "S2 floor", "S2W hooked", "S2M mixed"]);
    }

    #[test]
    fn a_file_without_a_summary_line_is_refused() {
        let error = Results::parse("# bench/run 2026\ncommit: x\n    summary indented\n");
        assert!(error.unwrap_err().contains("summary"));
        let bare = Results::parse("summary a=1").unwrap();
        assert_eq!((bare.date, bare.commit), (None, None));
        assert_eq!(bare.summary.len(), 1);
    }

    #[test]
    fn values_read_with_separators() {
        assert_eq!(thousands(15_518.4), "15,518");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(2.5), "2.5");
        assert_eq!(thousands(-1_500.0), "-1,500");
    }

    fn rows(rate: u64, seconds: u64) -> Vec<Row> {
        (0..seconds)
            .map(|second| Row {
                second,
                offered: rate,
                accepted: rate - second,
                p99_ms: Some(10.0 + second as f64),
                backlog: Some(second * 3),
            })
            .collect()
    }

    #[test]
    fn the_chart_has_every_panel_and_label() {
        let results = Results::parse(RESULTS).unwrap();
        let series = [
            Series {
                name: "S3 at 4452/s".into(),
                rows: rows(4_452, 5),
            },
            Series {
                name: "S3 carried at 954/s".into(),
                rows: rows(954, 5),
            },
        ];
        let svg = render(&results, &series).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "Atomic bench/run, commit abc1234, 2026-12-01T10:00:00Z",
            "S3 at 4452/s: 22,260 offered, 22,250 accepted in 5 s; backlog peak 12",
            "S3 carried at 954/s: 4,770 offered",
            "offered/s (sent)",
            "accepted/s (202)",
            "p99 ms (right axis)",
            "second of the load",
            // Every bar's category and value.
            "hot-row tps",
            "1,961",
            "TPC-B tps",
            "1,781",
            "S1 accepted",
            "1,363",
            "S2 batch 1",
            "486",
            "S2 batched",
            "2,480",
            "S3 sustained",
            "1,505",
            "S3 carried",
            "952",
            "ceiling: PostgreSQL alone (pgbench tps)",
            "measured",
            "S4 in-memory accepted/s = 15,518",
            "No figure (na): S1 floor, S2 floor, S2W hooked, S2M mixed",
        ] {
            assert!(svg.contains(text), "{text:?} missing from the SVG");
        }
        // No bar for a missing floor, so no floor legend either.
        assert!(!svg.contains(">floor<"));
    }

    #[test]
    fn a_chart_without_series_or_figures_still_draws() {
        let results = Results::parse("summary hot_row_tps=na").unwrap();
        let svg = render(&results, &[]).unwrap();
        assert!(svg.contains("the summary line has none"));
        assert!(svg.contains("S4 in-memory: no figure"));
        let empty = Series {
            name: "empty".into(),
            rows: Vec::new(),
        };
        let svg = render(&results, &[empty]).unwrap();
        assert!(svg.contains("empty: 0 offered, 0 accepted in 0 s"));
    }
}
