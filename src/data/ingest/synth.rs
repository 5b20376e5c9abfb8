//! Synthetic labelled images in the real CIFAR-10 and STL-10 binary layouts, for tests
//! and the built-in demo: no download needed.
//!
//! Each image is a smooth random background with a class-dependent oriented grating
//! (orientation, period and colour follow the label) under a random soft window, plus
//! distractor blobs, a soft edge and pixel noise. Class information lives in local
//! texture, not in global pixel positions, so patch features beat raw pixels clearly.

use std::io::Write;
use std::path::Path;

use rand::RngExt;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::rng::{normal, stream, uniform, Stream};

/// Number of classes.
pub const CLASSES: usize = 10;

const PALETTE: [[f64; 3]; CLASSES] = [
    [1.0, 0.2, 0.2],
    [0.2, 1.0, 0.2],
    [0.2, 0.2, 1.0],
    [1.0, 1.0, 0.2],
    [1.0, 0.2, 1.0],
    [0.2, 1.0, 1.0],
    [1.0, 0.6, 0.2],
    [0.6, 0.2, 1.0],
    [0.6, 0.6, 0.6],
    [0.2, 0.6, 1.0],
];

/// Which layout to write.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `data_batch_*.bin` + `test_batch.bin`, 32x32.
    Cifar10,
    /// `train_X.bin`, `train_y.bin`, ..., `unlabeled_X.bin`, 96x96.
    Stl10,
}

impl Layout {
    /// Image side of the layout (32 for CIFAR-10, 96 for STL-10).
    pub fn side(self) -> usize {
        match self {
            Layout::Cifar10 => super::cifar::SIDE,
            Layout::Stl10 => super::stl10::SIDE,
        }
    }
}

/// What to write.
#[derive(Clone, Debug)]
pub struct SynthSpec {
    /// Layout of the files.
    pub layout: Layout,
    /// Labelled training images.
    pub train: usize,
    /// Labelled test images.
    pub test: usize,
    /// Unlabeled images (STL-10 layout only).
    pub unlabeled: usize,
    /// Seed.
    pub seed: u64,
}

/// One image (HWC, uint8) of class `label`, from its own random stream.
pub fn image(label: usize, side: usize, seed: u64, index: u64) -> Vec<u8> {
    let mut r = stream(seed, Stream::Synth, index);
    let s = side as f64;
    let n = side * side;
    let mut img = vec![0f64; n * 3];
    let base = uniform(&mut r, 70.0, 170.0);
    img.iter_mut().for_each(|v| *v = base);
    for _ in 0..3 {
        let fx = uniform(&mut r, -1.5, 1.5) * std::f64::consts::TAU / s;
        let fy = uniform(&mut r, -1.5, 1.5) * std::f64::consts::TAU / s;
        let ph = uniform(&mut r, 0.0, std::f64::consts::TAU);
        let amp: [f64; 3] = std::array::from_fn(|_| uniform(&mut r, 5.0, 25.0));
        for p in 0..n {
            let (y, x) = ((p / side) as f64, (p % side) as f64);
            let w = (fx * x + fy * y + ph).cos();
            for c in 0..3 {
                img[p * 3 + c] += w * amp[c];
            }
        }
    }
    let theta = std::f64::consts::PI * label as f64 / CLASSES as f64 + 0.1 * normal(&mut r);
    let period = [5.0, 8.0, 12.0][label % 3] * uniform(&mut r, 0.9, 1.1);
    let ph = uniform(&mut r, 0.0, std::f64::consts::TAU);
    let cy = uniform(&mut r, 0.25, 0.75) * s;
    let cx = uniform(&mut r, 0.25, 0.75) * s;
    let sig = uniform(&mut r, 0.2, 0.4) * s;
    let amp = uniform(&mut r, 25.0, 60.0);
    let col: [f64; 3] =
        std::array::from_fn(|c| PALETTE[label][c] * 0.7 + uniform(&mut r, 0.0, 0.3));
    let (ct, st) = (theta.cos(), theta.sin());
    for p in 0..n {
        let (y, x) = ((p / side) as f64, (p % side) as f64);
        let g = ((ct * x + st * y) * std::f64::consts::TAU / period + ph).sin();
        let win = (-((y - cy).powi(2) + (x - cx).powi(2)) / (2.0 * sig * sig)).exp();
        for c in 0..3 {
            img[p * 3 + c] += amp * g * win * col[c];
        }
    }
    for k in 0..4 {
        let on = r.random::<f64>() < if k == 0 { 0.9 } else { 0.5 };
        let by = uniform(&mut r, 0.0, s);
        let bx = uniform(&mut r, 0.0, s);
        let bs = uniform(&mut r, 0.05, 0.15) * s;
        let bc: [f64; 3] = std::array::from_fn(|_| uniform(&mut r, -70.0, 70.0));
        if !on {
            continue;
        }
        for p in 0..n {
            let (y, x) = ((p / side) as f64, (p % side) as f64);
            let b = (-((y - by).powi(2) + (x - bx).powi(2)) / (2.0 * bs * bs)).exp();
            for c in 0..3 {
                img[p * 3 + c] += b * bc[c];
            }
        }
    }
    let et = uniform(&mut r, 0.0, std::f64::consts::PI);
    let eo = uniform(&mut r, 0.3, 0.7) * s * (et.cos().abs() + et.sin().abs());
    let ec: [f64; 3] = std::array::from_fn(|_| uniform(&mut r, -40.0, 40.0));
    for p in 0..n {
        let (y, x) = ((p / side) as f64, (p % side) as f64);
        let d = et.cos() * x + et.sin() * y - eo;
        let e = 1.0 / (1.0 + (-d / 1.5).exp());
        for c in 0..3 {
            img[p * 3 + c] += e * ec[c];
        }
    }
    img.iter()
        .map(|&v| (v + 6.0 * normal(&mut r)).round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Labels and HWC images `first..first+count` of one split.
fn split(spec: &SynthSpec, side: usize, first: u64, count: usize) -> Vec<(u8, Vec<u8>)> {
    (0..count as u64)
        .into_par_iter()
        .map(|i| {
            let idx = first + i;
            let label = (crate::rng::stream(spec.seed, Stream::Synth, !idx).random::<u64>()
                % CLASSES as u64) as usize;
            (label as u8, image(label, side, spec.seed, idx))
        })
        .collect()
}

fn planar(hwc: &[u8], side: usize, column_major: bool, out: &mut Vec<u8>) {
    for c in 0..3 {
        for a in 0..side {
            for b in 0..side {
                let (y, x) = if column_major { (b, a) } else { (a, b) };
                out.push(hwc[(y * side + x) * 3 + c]);
            }
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))
}

/// Streams images `first..first+n` into `path` in batches, so memory stays bounded;
/// `record` appends one (label, HWC image) in the file's layout.
fn emit(
    spec: &SynthSpec,
    path: &Path,
    first: u64,
    n: usize,
    mut record: impl FnMut(u8, &[u8], &mut Vec<u8>),
) -> Result<Vec<u8>> {
    const BATCH: usize = 512;
    let side = spec.layout.side();
    let file = std::fs::File::create(path).map_err(Error::io(path))?;
    let mut w = std::io::BufWriter::new(file);
    let mut labels = Vec::with_capacity(n);
    let mut buf = Vec::new();
    for lo in (0..n).step_by(BATCH) {
        buf.clear();
        for (l, img) in split(spec, side, first + lo as u64, BATCH.min(n - lo)) {
            labels.push(l);
            record(l, &img, &mut buf);
        }
        w.write_all(&buf).map_err(Error::io(path))?;
    }
    w.flush().map_err(Error::io(path))?;
    Ok(labels)
}

/// Writes the synthetic dataset into `out`.
pub fn write_dataset(spec: &SynthSpec, out: &Path) -> Result<()> {
    if spec.train == 0 || spec.test == 0 {
        return Err(Error::config(
            "synth",
            "train and test need at least one image",
        ));
    }
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let side = spec.layout.side();
    let names: Vec<String> = (0..CLASSES).map(|k| format!("class{k}")).collect();
    let test_first = spec.train as u64;
    let unl_first = test_first + spec.test as u64;
    match spec.layout {
        Layout::Cifar10 => {
            let cifar = |l: u8, img: &[u8], out: &mut Vec<u8>| {
                out.push(l);
                planar(img, side, false, out);
            };
            // Five batch files like the real set (fewer when there are few images).
            let batches = spec.train.clamp(1, 5);
            let per = spec.train.div_ceil(batches);
            for b in 0..batches {
                let lo = b * per;
                let n = per.min(spec.train.saturating_sub(lo));
                let path = out.join(format!("data_batch_{}.bin", b + 1));
                emit(spec, &path, lo as u64, n, cifar)?;
            }
            emit(
                spec,
                &out.join("test_batch.bin"),
                test_first,
                spec.test,
                cifar,
            )?;
            write(
                &out.join("batches.meta.txt"),
                (names.join("\n") + "\n").as_bytes(),
            )?;
        }
        Layout::Stl10 => {
            let stl = |_: u8, img: &[u8], out: &mut Vec<u8>| planar(img, side, true, out);
            for (stem, first, n, labelled) in [
                ("train", 0, spec.train, true),
                ("test", test_first, spec.test, true),
                ("unlabeled", unl_first, spec.unlabeled, false),
            ] {
                if n == 0 {
                    continue;
                }
                let labels = emit(spec, &out.join(format!("{stem}_X.bin")), first, n, stl)?;
                if labelled {
                    let ys: Vec<u8> = labels.iter().map(|l| l + 1).collect();
                    write(&out.join(format!("{stem}_y.bin")), &ys)?;
                }
            }
            write(
                &out.join("class_names.txt"),
                (names.join("\n") + "\n").as_bytes(),
            )?;
        }
    }
    Ok(())
}
