//! Pixel orders of raw image records and their detection.
//!
//! Dataset files disagree on where a pixel's bytes lie: CIFAR-10 stores colour planes
//! row by row, STL-10 stores them column by column, numpy arrays of images are usually
//! interleaved (H x W x C). For undocumented files the order is detected from the data:
//! under the right order neighbouring pixels are strongly correlated, under a wrong one
//! "neighbours" are bytes of distant pixels.

use serde::{Deserialize, Serialize};

use super::Shape;

/// Where pixel (channel c, row y, column x) lies inside an image record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelOrder {
    /// Interleaved, row-major: `(y * W + x) * C + c` (numpy `N x H x W x C`).
    Hwc,
    /// Interleaved, column-major: `(x * H + y) * C + c`.
    Whc,
    /// Colour planes, each row-major: `c * H * W + y * W + x` (CIFAR-10).
    Chw,
    /// Colour planes, each column-major: `c * H * W + x * H + y` (STL-10).
    Cwh,
}

impl PixelOrder {
    /// All orders, in the order detection prefers them on a tie.
    pub const ALL: [PixelOrder; 4] = [
        PixelOrder::Hwc,
        PixelOrder::Cwh,
        PixelOrder::Chw,
        PixelOrder::Whc,
    ];

    /// Byte index of (c, y, x).
    #[inline]
    pub fn index(self, s: Shape, c: usize, y: usize, x: usize) -> usize {
        let (h, w, ch) = (s.height, s.width, s.channels);
        match self {
            PixelOrder::Hwc => (y * w + x) * ch + c,
            PixelOrder::Whc => (x * h + y) * ch + c,
            PixelOrder::Chw => c * h * w + y * w + x,
            PixelOrder::Cwh => c * h * w + x * h + y,
        }
    }

    /// Lower-case name, as in configs.
    pub fn name(self) -> &'static str {
        match self {
            PixelOrder::Hwc => "hwc",
            PixelOrder::Whc => "whc",
            PixelOrder::Chw => "chw",
            PixelOrder::Cwh => "cwh",
        }
    }
}

impl std::str::FromStr for PixelOrder {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        PixelOrder::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| crate::Error::config("data.pixel_order", format!("unknown order {s:?}")))
    }
}

/// Converts one raw record to interleaved rows (HWC).
pub fn to_hwc(raw: &[u8], s: Shape, order: PixelOrder, out: &mut [u8]) {
    assert_eq!(out.len(), s.pixels());
    if order == PixelOrder::Hwc {
        out.copy_from_slice(raw);
        return;
    }
    for y in 0..s.height {
        for x in 0..s.width {
            for c in 0..s.channels {
                out[(y * s.width + x) * s.channels + c] = raw[order.index(s, c, y, x)];
            }
        }
    }
}

/// Mean absolute difference between horizontally and vertically adjacent pixels of
/// `records` read in `order`: small for the true order of natural images.
pub fn roughness(records: &[&[u8]], s: Shape, order: PixelOrder) -> f64 {
    let mut sum = 0u64;
    let mut n = 0u64;
    for r in records {
        for c in 0..s.channels {
            for y in 0..s.height - 1 {
                for x in 0..s.width - 1 {
                    let p = r[order.index(s, c, y, x)] as i32;
                    let right = r[order.index(s, c, y, x + 1)] as i32;
                    let down = r[order.index(s, c, y + 1, x)] as i32;
                    sum += ((p - right).abs() + (p - down).abs()) as u64;
                    n += 2;
                }
            }
        }
    }
    sum as f64 / n.max(1) as f64
}

/// Detects the pixel order of `records` of shape `s`.
///
/// Neighbour smoothness cannot tell an image from its transpose, so the answer is
/// interleaved-or-planar; within a family the row-major interleaved (numpy's) and
/// column-major planar (STL-10's own bytes) orders are preferred. Returns the order
/// and the roughness of each candidate, for the report.
pub fn detect(records: &[&[u8]], s: Shape) -> (PixelOrder, Vec<(PixelOrder, f64)>) {
    let scores: Vec<(PixelOrder, f64)> = [PixelOrder::Hwc, PixelOrder::Cwh]
        .into_iter()
        .map(|o| (o, roughness(records, s, o)))
        .collect();
    let best = scores
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|p| p.0)
        .unwrap_or(PixelOrder::Hwc);
    (best, scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A smooth test image in HWC.
    fn smooth(s: Shape) -> Vec<u8> {
        let mut v = vec![0u8; s.pixels()];
        for y in 0..s.height {
            for x in 0..s.width {
                for c in 0..s.channels {
                    v[(y * s.width + x) * s.channels + c] = ((y * 7 + x * 3 + c * 40) % 256) as u8;
                }
            }
        }
        v
    }

    fn from_hwc(hwc: &[u8], s: Shape, order: PixelOrder) -> Vec<u8> {
        let mut out = vec![0u8; s.pixels()];
        for y in 0..s.height {
            for x in 0..s.width {
                for c in 0..s.channels {
                    out[order.index(s, c, y, x)] = hwc[(y * s.width + x) * s.channels + c];
                }
            }
        }
        out
    }

    #[test]
    fn round_trip_every_order() {
        let s = Shape {
            height: 5,
            width: 7,
            channels: 3,
        };
        let img = smooth(s);
        for o in PixelOrder::ALL {
            let raw = from_hwc(&img, s, o);
            let mut back = vec![0u8; s.pixels()];
            to_hwc(&raw, s, o, &mut back);
            assert_eq!(back, img, "{o:?}");
        }
    }

    #[test]
    fn detects_interleaved_versus_planar() {
        let s = Shape::rgb(16);
        let img = smooth(s);
        for (o, family) in [
            (PixelOrder::Hwc, PixelOrder::Hwc),
            (PixelOrder::Cwh, PixelOrder::Cwh),
            (PixelOrder::Chw, PixelOrder::Cwh),
        ] {
            let raw = from_hwc(&img, s, o);
            assert_eq!(detect(&[&raw], s).0, family, "{o:?}");
        }
    }
}
