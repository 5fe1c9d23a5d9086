//! # iesp-plots — charts for iesp-test results
//!
//! Renders the measurements of `iesp-test bench` (IOPS against queue depth,
//! latency CDF, time series) to PNG with `plotters`, and will read the
//! tab-separated `bs threads value` files of iESP's old gnuplot script so
//! existing results can be migrated. It also owns the result data that
//! bench writes and plot reads.
//!
//! ## Layout
//!
//! - [`data`] — the bench report body, its points (with serialised
//!   histograms and per-second series), merging, the [`data::Recorder`].
//! - [`hist`] — HDR latency histograms, V2 + base64.
//! - [`input`] — reading bench JSON, bench CSV and legacy `.dat` files
//!   (errors name file and line); the CSV and `.dat` line formats.
//! - [`charts`] — log-x line charts and the block size × jobs heatmap
//!   ([`line_chart`] is here).
//! - [`render`] — which inputs feed which PNG of `iesp-test plot`.
//!
//! ## Fonts: embedded, no fontconfig
//!
//! Text is drawn with a font compiled into the binary — DejaVu Sans
//! (`plots/assets/DejaVuSans.ttf`, Bitstream Vera licence, see
//! `plots/assets/DejaVuSans-LICENSE.txt`) — through plotters' `ab_glyph`
//! backend, never with the system's fonts. So a static build renders the
//! same chart in an initramfs, a container or CI, and the crate links
//! neither fontconfig nor freetype. [`register_fonts`] makes the font
//! plotters' `sans-serif` (and [`FONT`]); every drawing function here calls
//! it first.

pub mod charts;
pub mod data;
pub mod hist;
pub mod input;
pub mod render;

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;
use thiserror::Error;

/// The family name the embedded font is registered under (besides
/// `sans-serif`, plotters' default).
pub const FONT: &str = "DejaVu Sans";

/// DejaVu Sans, embedded.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Why a chart could not be drawn.
#[derive(Debug, Error)]
pub enum PlotError {
    /// The embedded font did not parse (a broken build).
    #[error("the embedded font does not load")]
    Font,
    /// Nothing to draw.
    #[error("no data points to plot")]
    Empty,
    /// plotters failed: a bad path, an I/O error, a drawing error.
    #[error("drawing {path}: {message}")]
    Draw { path: String, message: String },
}

/// Registers the embedded font as `sans-serif` and [`FONT`] (once per
/// process; later calls return the first result).
pub fn register_fonts() -> Result<(), PlotError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        [FONT, "sans-serif"].iter().all(|name| {
            [FontStyle::Normal, FontStyle::Bold]
                .into_iter()
                .all(|style| plotters::style::register_font(name, style, DEJAVU_SANS).is_ok())
        })
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend text.
    pub label: String,
    /// `(x, y)` points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// What a line chart shows.
#[derive(Clone, Debug, PartialEq)]
pub struct LineChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// Width and height in pixels.
    pub size: (u32, u32),
}

/// The smallest range holding `values`, widened when it is a single value.
pub(crate) fn range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })?;
    if lo == hi {
        Some(lo - 1.0..hi + 1.0)
    } else {
        Some(lo..hi)
    }
}

/// `r` widened down to 0 when it is all positive (rates and counts are
/// read against zero).
pub(crate) fn from_zero(r: std::ops::Range<f64>) -> std::ops::Range<f64> {
    if r.start > 0.0 { 0.0..r.end } else { r }
}

/// Draws `chart` as a PNG file at `path`.
pub fn line_chart(path: &Path, chart: &LineChart<'_>) -> Result<(), PlotError> {
    register_fonts()?;
    let all = || chart.series.iter().flat_map(|s| s.points.iter());
    let xs = range(all().map(|p| p.0)).ok_or(PlotError::Empty)?;
    let ys = from_zero(range(all().map(|p| p.1)).ok_or(PlotError::Empty)?);
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, chart.size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(chart.title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xs, ys)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .y_label_formatter(&|v| charts::tick(*v))
        .label_style((FONT, 14))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(|e| err(&e))?
        .label(s.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    c.configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

    fn sample() -> Vec<Series> {
        vec![
            Series {
                label: "iesp-target".into(),
                points: vec![(1.0, 10_000.0), (2.0, 19_000.0), (4.0, 35_000.0)],
            },
            Series {
                label: "tgt — µs".into(),
                points: vec![(1.0, 8_000.0), (2.0, 15_000.0), (4.0, 26_000.0)],
            },
        ]
    }

    #[test]
    fn renders_a_png_with_text_from_the_embedded_font() {
        let dir = tempfile::tempdir().unwrap();
        let series = sample();
        let chart = |size| LineChart {
            title: "IOPS against queue depth",
            x_label: "queue depth",
            y_label: "IOPS",
            series: &series,
            size,
        };
        let p = dir.path().join("iops.png");
        line_chart(&p, &chart((640, 400))).unwrap();
        let png = std::fs::read(&p).unwrap();
        assert!(png.starts_with(PNG_MAGIC), "a PNG file");
        assert!(png.len() > 1000, "{} bytes", png.len());

        // Text is really drawn: the same chart without its labels differs.
        let bare = dir.path().join("bare.png");
        line_chart(
            &bare,
            &LineChart {
                title: "",
                x_label: "",
                y_label: "",
                ..chart((640, 400))
            },
        )
        .unwrap();
        assert_ne!(std::fs::read(&bare).unwrap(), png);
    }

    #[test]
    fn the_embedded_font_registers_and_measures_text() {
        register_fonts().unwrap();
        let font: FontDesc<'_> = (FONT, 20).into_font();
        let (w, h) = font.box_size("iesp-test").unwrap();
        assert!(w > 40 && h > 10, "{w}x{h}");
        let default: FontDesc<'_> = ("sans-serif", 20).into_font();
        assert_eq!(default.box_size("iesp-test").unwrap(), (w, h));
    }

    #[test]
    fn nothing_to_draw_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let r = line_chart(
            &dir.path().join("x.png"),
            &LineChart {
                title: "t",
                x_label: "x",
                y_label: "y",
                series: &[],
                size: (100, 100),
            },
        );
        assert!(matches!(r, Err(PlotError::Empty)), "{r:?}");
        assert_eq!(range([3.0].into_iter()), Some(2.0..4.0));
    }
}
