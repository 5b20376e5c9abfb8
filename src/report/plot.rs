//! Line plots as SVG and PNG, for reports: one [`Figure`] description drawn on two
//! canvases, so both files always show the same thing.
//!
//! The PNG canvas draws with embedded-graphics and its built-in bitmap font, so plots
//! need no system fonts or libraries.

use std::fmt::Write as _;
use std::path::Path;

use embedded_graphics::mono_font::{ascii::FONT_6X10, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Line, PrimitiveStyle};
use embedded_graphics::text::{Alignment, Text};

use crate::error::{Error, Result};

/// One named line of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points, drawn in order.
    pub points: Vec<(f64, f64)>,
}

/// A line plot.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    /// Title above the plot.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label over the y axis.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Names of the x positions 0, 1, 2, ... of a categorical axis (empty: numeric).
    pub x_names: Vec<String>,
    /// The lines.
    pub series: Vec<Series>,
}

/// The plot area's width; the legend's column to its right widens with its labels.
const PLOT_W: f64 = 460.0;
const H: f64 = 460.0;
const LEFT: f64 = 70.0;
/// Legend width left of the labels (the line sample) and per character: SVG's 12-pixel
/// sans-serif stays within the bitmap font's 6 pixels.
const LEGEND: f64 = 50.0;
const CHAR_W: f64 = 7.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Where text hangs from its anchor point.
#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

/// What a figure is drawn on.
trait Canvas {
    fn line(&mut self, a: (f64, f64), b: (f64, f64), rgb: (u8, u8, u8), width: u32);
    fn dot(&mut self, c: (f64, f64), rgb: (u8, u8, u8));
    fn text(&mut self, at: (f64, f64), s: &str, anchor: Anchor);
}

/// Round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        return (a..=b).map(|e| 10f64.powi(e)).collect();
    }
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').to_string()
    }
}

impl Figure {
    /// Width of the legend column.
    fn right(&self) -> f64 {
        let longest = self.series.iter().map(|s| s.name.chars().count());
        (LEGEND + CHAR_W * longest.max().unwrap_or(0) as f64).max(230.0)
    }

    /// Width of the whole figure.
    fn width(&self) -> f64 {
        LEFT + PLOT_W + self.right()
    }

    fn draw(&self, c: &mut dyn Canvas) {
        let (w, right) = (self.width(), self.right());
        let pts = self.series.iter().flat_map(|s| &s.points);
        let finite: Vec<(f64, f64)> = pts
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
            .copied()
            .collect();
        let (mut x0, mut x1, mut y0, mut y1) = finite.iter().fold(
            (
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ),
            |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
        );
        if finite.is_empty() {
            (x0, x1, y0, y1) = (1.0, 10.0, 0.0, 1.0);
        }
        if x1 <= x0 {
            (x0, x1) = if self.log_x {
                (x0 / 2.0, x1 * 2.0)
            } else {
                (x0 - 1.0, x1 + 1.0)
            };
        }
        if y1 <= y0 {
            (y0, y1) = (y0 - 0.5 * y0.abs().max(1e-3), y1 + 0.5 * y1.abs().max(1e-3));
        }
        let categorical = !self.x_names.is_empty();
        if categorical {
            (x0, x1) = (-0.5, self.x_names.len() as f64 - 0.5);
        }
        let xt = if categorical {
            (0..self.x_names.len()).map(|k| k as f64).collect()
        } else {
            ticks(x0, x1, self.log_x)
        };
        let yt = ticks(y0, y1, false);
        let (x0, x1) = (xt[0].min(x0), xt[xt.len() - 1].max(x1));
        let (y0, y1) = (yt[0], yt[yt.len() - 1]);
        let fx = |x: f64| {
            let t = if self.log_x {
                (x.log10() - x0.log10()) / (x1.log10() - x0.log10())
            } else {
                (x - x0) / (x1 - x0)
            };
            LEFT + t * (w - LEFT - right)
        };
        let fy = |y: f64| H - BOTTOM - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM);
        let grey = (220, 220, 220);
        let black = (0, 0, 0);
        for (k, &t) in xt.iter().enumerate() {
            c.line((fx(t), TOP), (fx(t), H - BOTTOM), grey, 1);
            let name = self.x_names.get(k).cloned().unwrap_or_else(|| label(t));
            c.text((fx(t), H - BOTTOM + 16.0), &name, Anchor::Middle);
        }
        for &t in &yt {
            c.line((LEFT, fy(t)), (w - right, fy(t)), grey, 1);
            c.text((LEFT - 6.0, fy(t) + 4.0), &label(t), Anchor::End);
        }
        c.line((LEFT, H - BOTTOM), (w - right, H - BOTTOM), black, 1);
        c.line((LEFT, TOP), (LEFT, H - BOTTOM), black, 1);
        c.text((w / 2.0 - right / 2.0, 22.0), &self.title, Anchor::Middle);
        c.text(
            ((LEFT + w - right) / 2.0, H - 12.0),
            &self.x_label,
            Anchor::Middle,
        );
        c.text((8.0, TOP - 8.0), &self.y_label, Anchor::Start);
        for (k, s) in self.series.iter().enumerate() {
            let rgb = PALETTE[k % PALETTE.len()];
            let p: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
                .map(|&(x, y)| (fx(x), fy(y)))
                .collect();
            for seg in p.windows(2) {
                c.line(seg[0], seg[1], rgb, 2);
            }
            if p.len() <= 60 {
                p.iter().for_each(|&q| c.dot(q, rgb));
            }
            let ly = TOP + 8.0 + 16.0 * k as f64;
            c.line((w - right + 12.0, ly), (w - right + 32.0, ly), rgb, 2);
            c.text((w - right + 38.0, ly + 4.0), &s.name, Anchor::Start);
        }
    }

    /// The figure as an SVG document.
    pub fn svg(&self) -> String {
        let mut c = Svg(String::new());
        self.draw(&mut c);
        let w = self.width();
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{H}\" \
             viewBox=\"0 0 {w} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{}</svg>\n",
            c.0
        )
    }

    /// Writes `<stem>.svg` and `<stem>.png`.
    pub fn save(&self, stem: &Path) -> Result<()> {
        let svg = stem.with_extension("svg");
        crate::fsio::write_atomic(&svg, self.svg().as_bytes())?;
        let mut img = Png(image::RgbImage::from_pixel(
            self.width() as u32,
            H as u32,
            image::Rgb([255, 255, 255]),
        ));
        self.draw(&mut img);
        let png = stem.with_extension("png");
        img.0
            .save(&png)
            .map_err(|e| Error::bad(&png, format!("cannot write PNG: {e}")))
    }
}

struct Svg(String);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Canvas for Svg {
    fn line(&mut self, a: (f64, f64), b: (f64, f64), (r, g, bl): (u8, u8, u8), width: u32) {
        let _ = writeln!(
            self.0,
            "<line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"rgb({r},{g},{bl})\" stroke-width=\"{width}\"/>",
            a.0, a.1, b.0, b.1
        );
    }
    fn dot(&mut self, c: (f64, f64), (r, g, b): (u8, u8, u8)) {
        let _ = writeln!(
            self.0,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"rgb({r},{g},{b})\"/>",
            c.0, c.1
        );
    }
    fn text(&mut self, at: (f64, f64), s: &str, anchor: Anchor) {
        let a = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        let _ = writeln!(
            self.0,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{a}\">{}</text>",
            at.0,
            at.1,
            escape(s)
        );
    }
}

struct Png(image::RgbImage);

impl OriginDimensions for Png {
    fn size(&self) -> Size {
        Size::new(self.0.width(), self.0.height())
    }
}

impl DrawTarget for Png {
    type Color = Rgb888;
    type Error = std::convert::Infallible;
    fn draw_iter<I>(&mut self, pixels: I) -> std::result::Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = (self.0.width() as i32, self.0.height() as i32);
        for Pixel(p, c) in pixels {
            if (0..w).contains(&p.x) && (0..h).contains(&p.y) {
                self.0
                    .put_pixel(p.x as u32, p.y as u32, image::Rgb([c.r(), c.g(), c.b()]));
            }
        }
        Ok(())
    }
}

fn pt(p: (f64, f64)) -> Point {
    Point::new(p.0.round() as i32, p.1.round() as i32)
}

impl Canvas for Png {
    fn line(&mut self, a: (f64, f64), b: (f64, f64), (r, g, bl): (u8, u8, u8), width: u32) {
        let style = PrimitiveStyle::with_stroke(Rgb888::new(r, g, bl), width);
        let _ = Line::new(pt(a), pt(b)).into_styled(style).draw(self);
    }
    fn dot(&mut self, c: (f64, f64), (r, g, b): (u8, u8, u8)) {
        let style = PrimitiveStyle::with_fill(Rgb888::new(r, g, b));
        let _ = Circle::with_center(pt(c), 7).into_styled(style).draw(self);
    }
    fn text(&mut self, at: (f64, f64), s: &str, anchor: Anchor) {
        let style = MonoTextStyle::new(&FONT_6X10, Rgb888::BLACK);
        let align = match anchor {
            Anchor::Start => Alignment::Left,
            Anchor::Middle => Alignment::Center,
            Anchor::End => Alignment::Right,
        };
        let _ = Text::with_alignment(s, pt(at), style, align).draw(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.31, 0.47, false);
        assert!(t[0] <= 0.31 && *t.last().unwrap() >= 0.47);
        assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
        assert_eq!(ticks(100.0, 100_000.0, true), vec![100.0, 1e3, 1e4, 1e5]);
    }

    #[test]
    fn svg_and_png_show_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let f = Figure {
            title: "accuracy <vs> step".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            log_x: false,
            x_names: Vec::new(),
            series: vec![
                Series {
                    name: "rf".into(),
                    points: vec![(8.0, 0.3), (16.0, 0.35)],
                },
                Series {
                    name: "lr".into(),
                    points: vec![(8.0, 0.4), (16.0, f64::NAN)],
                },
            ],
        };
        f.save(&dir.path().join("p")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("p.svg")).unwrap();
        assert!(svg.contains(">rf</text>") && svg.contains(">lr</text>"));
        assert!(svg.contains("accuracy &lt;vs&gt; step"));
        let png = image::open(dir.path().join("p.png")).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (f.width() as u32, H as u32));
        // The first series' colour is on the canvas.
        let (r, g, b) = PALETTE[0];
        assert!(png.pixels().any(|p| p.0 == [r, g, b]));
    }
}
