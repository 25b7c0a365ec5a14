//! The charts of report.html, drawn with plotters into inline SVG strings.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::escape::html_escape;
use super::schema::{Agreement, Calibration, PrePost, ReportData, Scatter, TrainingSummary};
use super::tables::{defined, per_cohort_rows};
use crate::{Error, Result};

/// Every chart of report.html, each a `<figure>` holding one `<svg class="chart" data-chart=ID>`.
pub(super) struct Charts {
    pub(super) scatter_pre: String,
    pub(super) scatter_post: String,
    pub(super) reliability_pre: String,
    pub(super) reliability_post: String,
    pub(super) cohort_bars: String,
    pub(super) disagreements: String,
    pub(super) loss: String,
    pub(super) val_spearman: String,
}

/// The `data-chart` ids of the charts in report.html, in page order.
pub const CHART_IDS: [&str; 8] = [
    "scatter-pre",
    "scatter-post",
    "cohort-spearman",
    "disagreements",
    "reliability-pre",
    "reliability-post",
    "training-loss",
    "validation-spearman",
];

pub(super) const PRE: RGBColor = RGBColor(0x4e, 0x79, 0xa7);
pub(super) const POST: RGBColor = RGBColor(0xf2, 0x8e, 0x2b);
pub(super) const GRAY: RGBColor = RGBColor(0x88, 0x88, 0x88);
pub(super) const LIGHT: RGBColor = RGBColor(0xe6, 0xe6, 0xe6);
const TEXT: RGBColor = RGBColor(0x33, 0x33, 0x33);
/// Cohort colours (Tableau 10 without its gray, which means "other cohorts").
const COHORT_COLORS: [RGBColor; 9] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
];
pub(super) const FONT: &str = "sans-serif";

pub(super) type PlotResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;
pub(super) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

impl Charts {
    /// Draws every chart of `d`.
    pub(super) fn render(d: &ReportData) -> Result<Charts> {
        let colors = CohortColors::new(&d.scatter);
        let human =
            padded_range(d.scatter.pre.points.iter().chain(&d.scatter.post.points).map(|p| p.human_score), (0.0, 1.0));
        let rho = |a: &Agreement| match defined(a.overall.spearman_r) {
            Some(r) => format!(" (ρ = {r:.3})"),
            None => String::new(),
        };
        let scatter_pre = scatter_chart(
            "scatter-pre",
            &format!("Base evaluator vs human, pre{}", rho(&d.pre)),
            &d.scatter.pre,
            human,
            &colors,
        )?;
        let scatter_post = scatter_chart(
            "scatter-post",
            &format!("Retrained evaluator vs human, post{}", rho(&d.post)),
            &d.scatter.post,
            human,
            &colors,
        )?;
        let ece = |c: &Calibration| match defined(c.ece) {
            Some(e) => format!(" (ECE = {e:.3})"),
            None => String::new(),
        };
        let reliability_pre = reliability_chart(
            "reliability-pre",
            &format!("Reliability, pre{}", ece(&d.calibration.pre)),
            &d.calibration.pre,
            PRE,
        )?;
        let reliability_post = reliability_chart(
            "reliability-post",
            &format!("Reliability, post{}", ece(&d.calibration.post)),
            &d.calibration.post,
            POST,
        )?;
        let cats: Vec<Bar> = per_cohort_rows(d)
            .into_iter()
            .map(|(c, a, b)| Bar {
                label: c.to_string(),
                pre: a.and_then(|s| defined(s.spearman_r)),
                post: b.and_then(|s| defined(s.spearman_r)),
            })
            .collect();
        let cohort_bars = bar_chart(
            "cohort-spearman",
            "Spearman ρ with human scores, by cohort",
            "Spearman ρ",
            &cats,
            BarScale::Correlation,
        )?;
        let dis: Vec<Bar> = d
            .disagreements_by_cohort
            .iter()
            .map(|(c, x)| Bar { label: c.clone(), pre: Some(x.pre as f64), post: Some(x.post as f64) })
            .collect();
        let disagreements = bar_chart(
            "disagreements",
            "Disagreements with the human verdict, by cohort",
            "requests",
            &dis,
            BarScale::Count,
        )?;
        let empty = TrainingSummary::default();
        let tr = d.training.as_ref().unwrap_or(&empty);
        let loss = loss_chart(tr)?;
        let val_spearman = val_spearman_chart(tr)?;
        Ok(Charts {
            scatter_pre,
            scatter_post,
            reliability_pre,
            reliability_post,
            cohort_bars,
            disagreements,
            loss,
            val_spearman,
        })
    }
}

/// Draws one chart into an SVG string and wraps it in a `<figure>`; the `<svg>` gets
/// `class="chart"`, `data-chart=ID`, `role="img"`, an `aria-label` and a `<title>`.
pub(super) fn svg_figure(
    id: &str,
    title: &str,
    size: (u32, u32),
    wide: bool,
    draw: impl FnOnce(&Area<'_>) -> PlotResult,
) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        let drawn = root.fill(&WHITE).and_then(|_| draw(&root)).and_then(|_| root.present());
        drawn.map_err(|e| Error::Chart { chart: id.to_string(), message: e.to_string() })?;
    }
    let (id_e, title_e) = (html_escape(id), html_escape(title));
    let svg = buf.replacen(
        "<svg ",
        &format!("<svg class=\"chart\" data-chart=\"{id_e}\" role=\"img\" aria-label=\"{title_e}\" "),
        1,
    );
    let svg = match svg.find('>') {
        Some(i) => format!("{}<title>{title_e}</title>{}", &svg[..=i], &svg[i + 1..]),
        None => svg,
    };
    let class = if wide { " class=\"wide\"" } else { "" };
    Ok(format!("<figure{class} id=\"chart-{id_e}\">\n{svg}</figure>\n"))
}

/// A range covering the finite values with 5% padding; `fallback` when there are none, and
/// widened around a single value.
pub(super) fn padded_range(values: impl Iterator<Item = f64>, fallback: (f64, f64)) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return fallback;
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let w = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 0.5 };
        return (lo - w, hi + w);
    }
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Truncates a label to `max` characters, with an ellipsis.
fn short(s: &str, max: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(super) fn no_data(area: &Area<'_>, msg: &str) -> PlotResult {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 16).into_font()).color(&GRAY).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(msg.to_string(), (w as i32 / 2, h as i32 / 2), style))
}

/// Cohort colours shared by both scatter plots: the most frequent cohorts get their own colour,
/// the rest are gray "other".
struct CohortColors {
    /// (cohort, colour index) for the coloured cohorts, in legend order.
    named: Vec<String>,
}

impl CohortColors {
    fn new(s: &PrePost<Scatter>) -> CohortColors {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in s.pre.points.iter().chain(&s.post.points) {
            *counts.entry(p.cohort.as_str()).or_default() += 1;
        }
        let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let named = if by_count.len() <= COHORT_COLORS.len() {
            by_count.iter().map(|(c, _)| c.to_string()).collect()
        } else {
            by_count.iter().take(COHORT_COLORS.len() - 1).map(|(c, _)| c.to_string()).collect()
        };
        CohortColors { named }
    }

    fn group(&self, cohort: &str) -> Option<usize> {
        self.named.iter().position(|c| c == cohort)
    }
}

fn scatter_chart(id: &str, title: &str, s: &Scatter, human: (f64, f64), colors: &CohortColors) -> Result<String> {
    let x = padded_range(s.points.iter().map(|p| p.eval_score), (0.0, 1.0));
    svg_figure(id, title, (580, 440), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(x.0..x.1, human.0..human.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("evaluator score")
            .y_desc("human score")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if s.points.is_empty() {
            return no_data(root, "no scored held-out requests");
        }
        // The named cohorts (at most as many as there are colours), then "other" in gray.
        let groups = colors.named.iter().zip(COHORT_COLORS).map(|(n, c)| (short(n, 24), c));
        for (g, (name, color)) in groups.chain([("other cohorts".to_string(), GRAY)]).enumerate() {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| colors.group(&p.cohort).unwrap_or(colors.named.len()) == g)
                .map(|p| (p.eval_score, p.human_score))
                .collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.mix(0.55).filled())))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()?;
        let note = if (s.points.len() as u64) < s.n_total {
            format!("{} of {} requests shown", s.points.len(), s.n_total)
        } else {
            format!("{} requests", s.points.len())
        };
        let (w, h) = root.dim_in_pixel();
        let style = TextStyle::from((FONT, 11).into_font()).color(&GRAY).pos(Pos::new(HPos::Right, VPos::Bottom));
        root.draw(&Text::new(note, (w as i32 - 8, h as i32 - 4), style))
    })
}

fn reliability_chart(id: &str, title: &str, c: &Calibration, color: RGBColor) -> Result<String> {
    let pts: Vec<(f64, f64, u64)> = c
        .reliability
        .iter()
        .filter_map(|b| Some((defined(b.mean_predicted)?, defined(b.observed)?, b.count)))
        .collect();
    // The unit square, widened if a bin lies outside it, with room for the dots at the edges.
    let lo = pts.iter().map(|p| p.0.min(p.1)).fold(0.0_f64, f64::min) - 0.02;
    let hi = pts.iter().map(|p| p.0.max(p.1)).fold(1.0_f64, f64::max) + 0.02;
    let max_count = pts.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64;
    svg_figure(id, title, (580, 440), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("mean predicted probability")
            .y_desc("observed frequency (human: good)")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new([(lo, lo), (hi, hi)], 6, 4, GRAY.stroke_width(1)))?
            .label("perfectly calibrated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GRAY.stroke_width(1)));
        if pts.is_empty() {
            return no_data(root, "no calibration bins");
        }
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label("evaluator (dot area = count)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| {
            let r = 3.0 + 5.0 * (p.2 as f64 / max_count).sqrt();
            Circle::new((p.0, p.1), r.round() as i32, color.filled())
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

/// One category of a grouped bar chart; `None` = undefined (drawn as "n/a").
struct Bar {
    label: String,
    pre: Option<f64>,
    post: Option<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum BarScale {
    /// Values in [-1, 1], labelled with 2 decimals.
    Correlation,
    /// Counts from 0, labelled as integers.
    Count,
}

fn bar_chart(id: &str, title: &str, y_desc: &str, bars: &[Bar], scale: BarScale) -> Result<String> {
    let n = bars.len().max(1);
    let values = bars.iter().flat_map(|b| [b.pre, b.post]).flatten();
    let (lo, hi) = match scale {
        BarScale::Correlation => {
            let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
            for v in values {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            // Room for the value labels above (below) the bars; the axis starts at 0 when no
            // value is negative.
            let lo = if lo < 0.0 { (lo - 0.12).max(-1.1) } else { 0.0 };
            (lo, (hi + 0.12).min(1.1))
        }
        BarScale::Count => (0.0, values.fold(1.0_f64, f64::max) * 1.15),
    };
    let base = 0.0_f64.clamp(lo, hi);
    let fmt = move |v: f64| match scale {
        // No "-0.00" for a value that rounds to zero.
        BarScale::Correlation => format!("{:.2}", if v.abs() < 0.005 { 0.0 } else { v }),
        BarScale::Count => format!("{:.0}", if v.abs() < 0.5 { 0.0 } else { v }),
    };
    // Category labels: horizontal (truncated to their slot) when at least 10 characters fit under
    // their bars, else rotated to read upwards. About 6 px per character at this font size.
    let width = 1160_u32;
    let fit_chars = (width as usize - 90) / n / 6;
    let longest = bars.iter().map(|b| b.label.chars().count()).max().unwrap_or(0);
    let rotated = fit_chars < longest.min(10);
    let labels: Vec<String> =
        bars.iter().map(|b| short(&b.label, if rotated { 24 } else { fit_chars.max(1) })).collect();
    let label_area = if rotated { 16 + 5 * labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) } else { 30 };
    let height = 360 + label_area as u32;
    svg_figure(id, title, (width, height), true, |root| {
        let y_fmt = |v: &f64| fmt(*v);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(label_area as u32)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_labels(n)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&y_fmt)
            .y_desc(y_desc)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if bars.is_empty() {
            return no_data(root, "no cohorts");
        }
        if lo < 0.0 {
            chart.draw_series(LineSeries::new([(-0.5, 0.0), (n as f64 - 0.5, 0.0)], TEXT.stroke_width(1)))?;
        }
        let value_labels = n <= 16;
        let mut elems: Vec<DynElement<'static, SVGBackend<'_>, (f64, f64)>> = Vec::new();
        for (i, b) in bars.iter().enumerate() {
            let c = i as f64;
            if b.pre.is_none() && b.post.is_none() {
                elems.push(Text::new("n/a".to_string(), (c, base), small_text(VPos::Bottom, &GRAY)).into_dyn());
                continue;
            }
            for (v, color, x) in [(b.pre, PRE, c - 0.2), (b.post, POST, c + 0.2)] {
                match v {
                    Some(v) => {
                        elems.push(Rectangle::new([(x - 0.18, base), (x + 0.18, v)], color.filled()).into_dyn());
                        if value_labels {
                            let anchor = if v >= base { VPos::Bottom } else { VPos::Top };
                            elems.push(Text::new(fmt(v), (x, v), small_text(anchor, &TEXT)).into_dyn());
                        }
                    }
                    None => {
                        elems.push(Text::new("n/a".to_string(), (x, base), small_text(VPos::Bottom, &GRAY)).into_dyn())
                    }
                }
            }
        }
        chart.draw_series(elems)?;
        // Category labels, drawn here rather than by the mesh so that they can be rotated.
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64, lo));
            let style = TextStyle::from((FONT, 12).into_font()).color(&TEXT);
            let style = if rotated {
                style.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw(&Text::new(label.clone(), (x, y + 8), style))?;
        }
        // The legend, top right beside the caption, clear of the bars.
        let (w, _) = root.dim_in_pixel();
        for (k, (name, color)) in [("pre (base)", PRE), ("post (retrained)", POST)].into_iter().enumerate() {
            let x = w as i32 - 260 + 120 * k as i32;
            root.draw(&Rectangle::new([(x, 12), (x + 12, 24)], color.filled()))?;
            let style = TextStyle::from((FONT, 12).into_font()).color(&TEXT).pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(name, (x + 18, 18), style))?;
        }
        Ok(())
    })
}

fn small_text(anchor: VPos, color: &'static RGBColor) -> TextStyle<'static> {
    TextStyle::from((FONT, 11).into_font()).color(color).pos(Pos::new(HPos::Center, anchor))
}

fn step_range(tr: &TrainingSummary) -> (f64, f64) {
    padded_range(tr.curves.iter().map(|p| p.step as f64), (0.0, 1.0))
}

fn best_step_line(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    tr: &TrainingSummary,
    y: (f64, f64),
) -> PlotResult {
    if let Some(s) = tr.best_step {
        let s = s as f64;
        chart
            .draw_series(DashedLineSeries::new([(s, y.0), (s, y.1)], 5, 4, GRAY.stroke_width(1)))?
            .label(format!("best step ({s})"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GRAY.stroke_width(1)));
    }
    Ok(())
}

fn loss_chart(tr: &TrainingSummary) -> Result<String> {
    let train: Vec<(f64, f64)> =
        tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.train_loss)?))).collect();
    let val: Vec<(f64, f64)> = tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.val_loss)?))).collect();
    let x = step_range(tr);
    let top = train.iter().chain(&val).map(|p| p.1).fold(0.0_f64, f64::max);
    let y = (0.0, if top > 0.0 { top * 1.1 } else { 1.0 });
    svg_figure("training-loss", "Training and validation loss", (580, 400), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Training and validation loss", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("optimizer step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("loss")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if train.is_empty() && val.is_empty() {
            return no_data(root, "no training curves");
        }
        if !train.is_empty() {
            chart
                .draw_series(LineSeries::new(train.iter().copied(), PRE.stroke_width(2)))?
                .label("train loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], PRE.stroke_width(2)));
        }
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), POST.stroke_width(2)).point_size(3))?
                .label("validation loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], POST.stroke_width(2)));
        }
        best_step_line(&mut chart, tr, y)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

fn val_spearman_chart(tr: &TrainingSummary) -> Result<String> {
    let val: Vec<(f64, f64)> =
        tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.val_spearman)?))).collect();
    let x = step_range(tr);
    let y = padded_range(val.iter().map(|p| p.1), (0.0, 1.0));
    let y = (y.0.max(-1.05), y.1.min(1.05));
    svg_figure("validation-spearman", "Validation Spearman ρ", (580, 400), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Validation Spearman ρ", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("optimizer step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("Spearman ρ")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if val.is_empty() {
            return no_data(root, "no validation points");
        }
        let green = COHORT_COLORS[4];
        chart
            .draw_series(LineSeries::new(val.iter().copied(), green.stroke_width(2)).point_size(3))?
            .label("validation Spearman ρ")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], green.stroke_width(2)));
        best_step_line(&mut chart, tr, y)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

#[cfg(test)]
mod tests {
    use crate::report::tests::{COHORTS, synthetic};
    use crate::report::{CHART_IDS, render_html};

    /// The `<figure>` of one chart.
    fn figure<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html.find(&format!(" id=\"chart-{id}\">")).unwrap_or_else(|| panic!("no figure for chart {id}"));
        let end = html[start..].find("</figure>").expect("figure closes") + start;
        &html[start..end]
    }

    #[test]
    fn html_has_every_chart_with_its_marks() {
        let d = synthetic();
        let html = render_html(&d).unwrap();
        assert_eq!(html.matches("<svg").count(), CHART_IDS.len());
        for id in CHART_IDS {
            assert!(html.contains(&format!("data-chart=\"{id}\"")), "no chart {id}");
            let f = figure(&html, id);
            assert_eq!(f.matches("<title>").count(), 1, "{id} has one <title>");
            assert!(f.contains("</svg>"), "{id} closes");
        }
        // Scatter: one circle per point (plus legend markers).
        for (id, s) in [("scatter-pre", &d.scatter.pre), ("scatter-post", &d.scatter.post)] {
            let circles = figure(&html, id).matches("<circle").count();
            assert!(circles >= s.points.len(), "{id}: {circles} circles for {} points", s.points.len());
        }
        assert!(figure(&html, "scatter-pre").contains("Base evaluator vs human, pre (ρ = 0.431)"));
        assert!(figure(&html, "scatter-pre").contains("400 of 500 requests shown"));
        // Reliability: the diagonal (dashed, so several segments), the curve, a dot per non-empty bin.
        let rel = figure(&html, "reliability-post");
        assert!(rel.contains("perfectly calibrated"));
        assert!(rel.matches("<polyline").count() >= 3, "diagonal dashes and the curve");
        assert!(rel.matches("<circle").count() >= 9, "a dot per non-empty bin");
        assert!(figure(&html, "reliability-pre").contains("ECE = 0.118"));
        // Bars: two per cohort with both values, "n/a" where undefined (cohort "tiny").
        let bars = figure(&html, "cohort-spearman");
        assert!(bars.matches("<rect").count() >= 2 * COHORTS.len());
        assert_eq!(bars.matches(">\nn/a\n<").count(), 1, "tiny: one n/a for both sides");
        let dis = figure(&html, "disagreements");
        assert!(dis.matches("<rect").count() >= 2 * 6);
        // Curves: train and validation loss lines, the best-step marker.
        let loss = figure(&html, "training-loss");
        assert!(loss.contains("train loss") && loss.contains("validation loss") && loss.contains("best step (120)"));
        assert!(loss.matches("<polyline").count() >= 3);
        assert!(figure(&html, "validation-spearman").matches("<circle").count() >= 3);
    }
}
