//! Throughput benchmark behind `scripts/bench.sh`: this machine's f32 matrix-multiply
//! rate for the shapes the objective uses (the "peak" the rest is compared with), the
//! loss + gradient rate for several hidden sizes, and the fused encoding rate at
//! several steps, and the linear classifier's loss + gradient rate on wide features.
//! Prints one JSON object per measurement to stdout.
//!
//! `cargo bench --bench throughput -- [--quick] [--hidden 25,100,400,1600] [--only linear]`

use std::time::Instant;

use ndarray::{Array2, Axis};
use rayon::prelude::*;
use sae::data::ingest::{ImageSet, Shape};
use sae::data::preprocess::Normaliser;
use sae::data::store::MemoryRows;
use sae::encode::{Encoder, Mode};
use sae::learn::sae::objective::{Objective, Penalty, BLOCK};
use sae::learn::sae::{Architecture, Decoder, Network};

fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// This machine's f32 fused multiply-add peak, one OS thread per rayon worker: independent
/// 256-bit FMA chains (enough of them to hide the FMA latency), no memory traffic.
/// Each stage's rate is reported as a fraction of it.
pub fn fma_peak() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let iters = 20_000_000usize;
        let threads = rayon::current_num_threads();
        // One OS thread per worker, so that every core runs its chains at once (a
        // rayon pool that has just started may run both items on one thread).
        let t = best_of(3, || {
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|k| s.spawn(move || unsafe { fma_chains(iters, k as f32) }))
                    .collect();
                let sum: f32 = hs.into_iter().map(|h| h.join().expect("fma thread")).sum();
                std::hint::black_box(sum);
            });
        });
        // 12 chains x 8 lanes x 2 flops per iteration and thread.
        return (threads * iters * 12 * 8 * 2) as f64 / t / 1e9;
    }
    f64::NAN
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: usize, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let mut sum = acc[0];
    for v in &acc[1..] {
        sum = _mm256_add_ps(sum, *v);
    }
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out.iter().sum()
}

/// `n` synthetic colour images of side `side`, labelled.
fn image_set(n: usize, side: usize) -> ImageSet {
    let shape = Shape::rgb(side);
    let bytes: Vec<u8> = (0..n * shape.pixels())
        .map(|i| ((i * 7 + i / 300) % 251) as u8)
        .collect();
    ImageSet::from_hwc("bench", bytes, shape, Some(vec![0; n])).unwrap()
}

/// Memory read bandwidth in GB/s: every thread sums its share of `x` (larger than the
/// caches), eight lanes at a time.
fn read_bandwidth(x: &Array2<f32>) -> f64 {
    let flat = x.as_slice().expect("standard layout");
    let t = best_of(3, || {
        let s: f32 = flat
            .par_chunks(flat.len().div_ceil(rayon::current_num_threads()))
            .map(sum_lanes)
            .sum();
        std::hint::black_box(s);
    });
    (flat.len() * 4) as f64 / t / 1e9
}

sae::avx2_or_plain! {
    fn sum_lanes_into(v: &[f32], out: &mut [f32; 8]) {
        for c in v.chunks_exact(8) {
            for l in 0..8 {
                out[l] += c[l];
            }
        }
    }
}

fn sum_lanes(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    sum_lanes_into(v, &mut acc);
    acc.iter().sum()
}

fn data(m: usize, d: usize) -> Array2<f32> {
    Array2::from_shape_fn((m, d), |(i, j)| {
        0.1 + 0.8 * (((i * 131 + j * 71) % 257) as f32 / 257.0)
    })
}

/// The objective's GEMMs at full parallel speed: X·Wᵀ and Dᵀ·X over row blocks.
fn gemm_peak(x: &Array2<f32>, h: usize, reps: usize) -> f64 {
    let d = x.ncols();
    let w = Array2::from_shape_fn((h, d), |(i, j)| ((i + j) % 7) as f32 * 0.01);
    let t = best_of(reps, || {
        let s: f32 = x
            .axis_chunks_iter(Axis(0), BLOCK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|b| {
                let z = b.dot(&w.t());
                let g = z.t().dot(&b);
                z[[0, 0]] + g[[0, 0]]
            })
            .sum();
        std::hint::black_box(s);
    });
    4.0 * (x.nrows() * d * h) as f64 / t / 1e9
}

/// The classifier objective on CIFAR-10-sized features (50,000 x 6,400, 10 classes):
/// seconds per loss + gradient, and its rate as a fraction of the plain GEMM of the same
/// shapes, which is bound by reading the feature matrix twice.
fn linear(quick: bool) {
    let (n, d, c) = if quick {
        (10_000, 6_400, 10)
    } else {
        (50_000, 6_400, 10)
    };
    let x = Array2::from_shape_fn((n, d), |(i, j)| {
        (((i * 131 + j * 71) % 257) as f32 / 128.0) - 1.0
    });
    let y: Vec<u32> = (0..n).map(|i| (i % c) as u32).collect();
    let theta: Vec<f64> = (0..c * (d + 1))
        .map(|i| ((i % 13) as f64 - 6.0) * 1e-3)
        .collect();
    let threads = rayon::current_num_threads();
    let peak = gemm_peak(&x, c, 3);
    let (fma, bw) = (fma_peak(), read_bandwidth(&x));
    for loss in [
        sae::evaluate::linear::Loss::Softmax,
        sae::evaluate::linear::Loss::SquaredHinge,
    ] {
        let rows: Vec<usize> = (0..n).collect();
        let id = sae::evaluate::linear::Standardiser::identity(d);
        let t = best_of(3, || {
            std::hint::black_box(sae::evaluate::linear::objective::<f32>(
                loss,
                sae::evaluate::linear::Features::Memory(x.view()),
                &rows,
                &y,
                &id,
                c,
                1e-3,
                &theta,
            ))
            .expect("objective");
        });
        let gflops = 4.0 * (n * d * c) as f64 / t / 1e9;
        // One pass over the features per evaluation.
        let gbs = (n * d * 4) as f64 / t / 1e9;
        println!(
            "{{\"bench\":\"linear\",\"loss\":\"{loss:?}\",\"rows\":{n},\"features\":{d},\"classes\":{c},\"threads\":{threads},\"seconds\":{t:.4},\"gflops\":{gflops:.2},\"gemm_gflops\":{peak:.2},\"fraction_of_gemm\":{:.3},\"fraction_of_fma_peak\":{:.3},\"read_gb_per_s\":{gbs:.2},\"bandwidth_gb_per_s\":{bw:.2},\"fraction_of_bandwidth\":{:.3}}}",
            gflops / peak,
            gflops / fma,
            gbs / bw
        );
    }
}

/// Encoding in the Coates layout: 32x32 colour images, 6x6 patches at stride 1,
/// contrast normalisation + ZCA, polarity-split soft threshold, quadrant pooling; its
/// rate against the plain product of the same shapes (patches x 108 · 108 x H).
fn encode_coates(hidden: &[usize], quick: bool, reps: usize, fma: f64) {
    let (side, p, d) = (32, 6, 108);
    let n_img = if quick { 256 } else { 1024 };
    let set = image_set(n_img, side);
    let a = Array2::from_shape_fn((d, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.01);
    let zca = &a + &a.t() + Array2::<f32>::eye(d);
    let norm = Normaliser::Zca {
        contrast: true,
        cn_eps: 10.0 / 255.0 / 255.0,
        mean: vec![0.0; d],
        w: zca.iter().copied().collect(),
    };
    let threads = rayon::current_num_threads();
    let per = sae::data::patches::grid(side, p, 1).len().pow(2);
    for &h in hidden {
        let arch = Architecture::new(d, &[h], None, Decoder::Linear).unwrap();
        let net = Network::from_theta(arch.clone(), &arch.init(1));
        let enc = Encoder::new(&net, norm.clone(), p).with_code(sae::encode::Code::SoftThreshold {
            alpha: 0.25,
            bias: false,
        });
        let tile = (sae::encode::TILE_ROWS / per).max(1);
        let t = best_of(reps, || {
            let tiles: Vec<usize> = (0..n_img).step_by(tile).collect();
            let s: f32 = tiles
                .par_iter()
                .map(|&lo| enc.tile(&set, lo, (lo + tile).min(n_img), 1, Mode::Pool)[[0, 0]])
                .sum();
            std::hint::black_box(s);
        });
        let x = data(n_img * per, d);
        let w = Array2::from_shape_fn((h, d), |(i, j)| ((i + j) % 7) as f32 * 0.01);
        let g = best_of(reps, || {
            let s: f32 = x
                .axis_chunks_iter(Axis(0), tile * per)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|b| b.dot(&w.t())[[0, 0]])
                .sum();
            std::hint::black_box(s);
        });
        let flops = 2.0 * (n_img * per * d * h) as f64;
        println!(
            "{{\"bench\":\"encode_coates\",\"images\":{n_img},\"side\":{side},\"patch\":{p},\"step\":1,\"hidden\":{h},\"threads\":{threads},\"seconds\":{t:.4},\"images_per_s\":{:.1},\"gflops\":{:.2},\"product_gflops\":{:.2},\"fraction_of_product\":{:.3},\"fraction_of_fma_peak\":{:.3}}}",
            n_img as f64 / t,
            flops / t / 1e9,
            flops / g / 1e9,
            g / t,
            flops / t / 1e9 / fma
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let hidden: Vec<usize> = args
        .iter()
        .position(|a| a == "--hidden")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|h| h.parse().ok()).collect())
        .unwrap_or_else(|| {
            if quick {
                vec![25, 100, 400]
            } else {
                vec![25, 100, 400, 1600]
            }
        });
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    if only.as_deref() == Some("fma") {
        println!(
            "{{\"bench\":\"fma_peak\",\"threads\":{},\"gflops\":{:.2}}}",
            rayon::current_num_threads(),
            fma_peak()
        );
        return;
    }
    if only.as_deref() == Some("linear") {
        linear(quick);
        return;
    }
    let m = if quick { 32_768 } else { 131_072 };
    let reps = if quick { 2 } else { 3 };
    let threads = rayon::current_num_threads();
    let fma = fma_peak();
    println!("{{\"bench\":\"fma_peak\",\"threads\":{threads},\"gflops\":{fma:.2}}}");
    let pen = Penalty {
        lambda: 1e-5,
        beta: 3.0,
        rho: 0.01,
    };
    // 6x6 and 8x8 colour patches.
    for d in [108, 192] {
        let x = data(m, d);
        let rows = MemoryRows {
            data: x.view(),
            chunk: 65_536,
        };
        for &h in &hidden {
            let peak = gemm_peak(&x, h, reps);
            println!(
                "{{\"bench\":\"gemm\",\"rows\":{m},\"visible\":{d},\"hidden\":{h},\"threads\":{threads},\"gflops\":{peak:.2},\"fraction_of_fma_peak\":{:.3}}}",
                peak / fma
            );
            let arch = Architecture::new(d, &[h], None, Decoder::Sigmoid).unwrap();
            let theta = arch.init(1);
            let obj = Objective::new(&arch, pen, &rows);
            let t = best_of(reps, || {
                std::hint::black_box(obj.eval::<f32>(&theta).unwrap());
            });
            // GEMMs of 2·m·d·H flops: ρ̂ pass, two forward, three backward; the second
            // pass reuses the first layer's activations when they fit the cache.
            let gemms = if m * h * 4 <= sae::learn::sae::objective::CACHE_BYTES {
                5.0
            } else {
                6.0
            };
            let gflops = 2.0 * gemms * (m * d * h) as f64 / t / 1e9;
            println!(
                "{{\"bench\":\"loss_gradient\",\"rows\":{m},\"visible\":{d},\"hidden\":{h},\"threads\":{threads},\"seconds\":{t:.4},\"patches_per_s\":{:.0},\"gflops\":{gflops:.2},\"fraction_of_gemm\":{:.3},\"fraction_of_fma_peak\":{:.3}}}",
                m as f64 / t,
                gflops / peak,
                gflops / fma
            );
        }
    }
    // Encoding: 96x96 images, pooled, ufldl scaling, at several steps.
    let side = 96;
    let n_img = if quick { 64 } else { 128 };
    let set = image_set(n_img, side);
    encode_coates(&hidden, quick, reps, fma);
    for &h in &hidden {
        let arch = Architecture::new(192, &[h], None, Decoder::Sigmoid).unwrap();
        let net = Network::from_theta(arch.clone(), &arch.init(1));
        let enc = Encoder::new(&net, Normaliser::Ufldl { pstd: 0.3 }, 8);
        for step in [8, 4, 2, 1] {
            let per = sae::data::patches::grid(side, 8, step).len().pow(2);
            let tile = (sae::encode::TILE_ROWS / per).max(1);
            let t = best_of(reps, || {
                let tiles: Vec<usize> = (0..n_img).step_by(tile).collect();
                let s: f32 = tiles
                    .par_iter()
                    .map(|&lo| enc.tile(&set, lo, (lo + tile).min(n_img), step, Mode::Pool)[[0, 0]])
                    .sum();
                std::hint::black_box(s);
            });
            let patches = (n_img * per) as f64;
            let gflops = 2.0 * patches * (192 * h) as f64 / t / 1e9;
            println!(
                "{{\"bench\":\"encode\",\"images\":{n_img},\"side\":{side},\"step\":{step},\"hidden\":{h},\"threads\":{threads},\"seconds\":{t:.4},\"patches_per_s\":{:.0},\"images_per_s\":{:.1},\"gflops\":{gflops:.2}}}",
                patches / t,
                n_img as f64 / t
            );
        }
    }
}
