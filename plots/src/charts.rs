//! The chart kinds beyond [`crate::line_chart`]: lines on a logarithmic x
//! axis (queue depths, the latency CDF) and the block size × jobs heatmap
//! that replaces plot.sh's 3-D chart.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::{FONT, LineChart, PlotError, from_zero, range, register_fonts};

fn draw_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Most distinct x values that each get a tick of their own on a log-x
/// chart (queue depths, threads); more (a CDF) get plotters' ticks.
pub const MAX_OWN_TICKS: usize = 24;

/// The x ticks of a log-x chart of `series`: every distinct x value > 0
/// when there are at most [`MAX_OWN_TICKS`], else `None` (plotters'
/// powers of ten). Between 1 and 8, plotters' own would be one tick.
pub fn log_x_ticks(series: &[crate::Series]) -> Option<Vec<f64>> {
    let mut xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .filter(|x| *x > 0.0 && x.is_finite())
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    (!xs.is_empty() && xs.len() <= MAX_OWN_TICKS).then_some(xs)
}

/// Draws `chart` with a base-10 logarithmic x axis (values ≤ 0 dropped).
pub fn log_x_line_chart(path: &Path, chart: &LineChart<'_>) -> Result<(), PlotError> {
    register_fonts()?;
    let all = || {
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.0 > 0.0)
    };
    let xs = range(all().map(|p| p.0)).ok_or(PlotError::Empty)?;
    let ys = from_zero(range(all().map(|p| p.1)).ok_or(PlotError::Empty)?);
    // One x value: a factor of two either side (on a log axis, ±1 around 1
    // would start at 0).
    let ticks = log_x_ticks(chart.series);
    let xs = match ticks.as_deref() {
        Some([x]) => x / 2.0..x * 2.0,
        _ => xs.start.max(f64::MIN_POSITIVE)..xs.end,
    };
    match ticks {
        Some(ticks) => draw_lines(path, chart, xs.log_scale().with_key_points(ticks), ys),
        None => draw_lines(path, chart, xs.log_scale(), ys),
    }
}

/// A caption font size at which `title` fits `width` pixels (22 at most,
/// 10 at least).
pub(crate) fn caption_size(title: &str, width: u32) -> u32 {
    let room = width.saturating_sub(30);
    (10..=22)
        .rev()
        .find(|&size| {
            let font: FontDesc<'_> = (FONT, size).into_font();
            font.box_size(title).is_ok_and(|(w, _)| w <= room)
        })
        .unwrap_or(10)
}

/// The lines of `chart` over the x coordinate `xs`.
pub(crate) fn draw_lines<X>(
    path: &Path,
    chart: &LineChart<'_>,
    xs: X,
    ys: std::ops::Range<f64>,
) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let err = draw_err(path);
    let root = BitMapBackend::new(path, chart.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, (FONT, caption_size(chart.title, chart.size.0)))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .x_labels(8)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0 > 0.0).collect();
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        // Markers on measured points, not on a CDF's thousands of steps.
        if pts.len() <= 40 {
            c.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
    }
    c.configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A grid of values: `cells[row][column]`, rows are `rows` (e.g. block
/// sizes), columns `columns` (e.g. jobs); `None` where nothing was
/// measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    pub cells: Vec<Vec<Option<f64>>>,
    pub size: (u32, u32),
}

/// The colour of `t` in 0..=1: pale yellow to dark blue.
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * t).round() as u8;
    RGBColor(mix(255, 37), mix(255, 52), mix(204, 148))
}

/// An axis tick: whole numbers without decimals, large ones short.
pub fn tick(v: f64) -> String {
    if v.abs() >= 1e4 {
        short(v)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `12.3k`-style short numbers for cells.
pub fn short(v: f64) -> String {
    match v.abs() {
        x if x >= 1e6 => format!("{:.1}M", v / 1e6),
        x if x >= 1e4 => format!("{:.0}k", v / 1e3),
        x if x >= 1e3 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

/// Draws `map` as a PNG: one shaded, labelled cell per value.
pub fn heatmap(path: &Path, map: &Heatmap<'_>) -> Result<(), PlotError> {
    register_fonts()?;
    let (nx, ny) = (map.columns.len(), map.rows.len());
    let values: Vec<f64> = map.cells.iter().flatten().flatten().copied().collect();
    if nx == 0 || ny == 0 || values.is_empty() {
        return Err(PlotError::Empty);
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    let err = draw_err(path);
    let root = BitMapBackend::new(path, map.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(map.title, (FONT, caption_size(map.title, map.size.0)))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)
        .map_err(|e| err(&e))?;
    let at = |v: f64, names: &[String]| -> String {
        let i = v - 0.5;
        if (i - i.round()).abs() < 1e-6 && i >= 0.0 {
            names.get(i.round() as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    c.configure_mesh()
        .disable_mesh()
        .x_desc(map.x_label)
        .y_desc(map.y_label)
        .x_labels(nx * 2 + 1)
        .y_labels(ny * 2 + 1)
        .x_label_formatter(&|v| at(*v, &map.columns))
        .y_label_formatter(&|v| at(*v, &map.rows))
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    let cell_font =
        (FONT, 16)
            .into_font()
            .into_text_style(&root)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ));
    for (r, row) in map.cells.iter().enumerate() {
        for (col, v) in row.iter().enumerate() {
            let Some(v) = *v else { continue };
            let t = if hi > lo { (v - lo) / (hi - lo) } else { 1.0 };
            let (x, y) = (col as f64, r as f64);
            c.draw_series(std::iter::once(Rectangle::new(
                [(x, y), (x + 1.0, y + 1.0)],
                shade(t).filled(),
            )))
            .map_err(|e| err(&e))?;
            let text_color = if t > 0.55 { WHITE } else { BLACK };
            c.draw_series(std::iter::once(Text::new(
                short(v),
                (x + 0.5, y + 0.5),
                cell_font.color(&text_color),
            )))
            .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
