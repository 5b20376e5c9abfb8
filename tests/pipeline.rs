//! Stages chained on small synthetic data: features, and an end-to-end run.

use ndarray::Array2;
use sae::data::ingest::synth::{write_dataset, Layout, SynthSpec};
use sae::data::ingest::{Dataset, Format, OpenOptions};
use sae::data::preprocess::Normaliser;
use sae::encode::{Encoder, Mode};
use sae::learn::sae::{encode, Architecture, Decoder, Network};

use crate::util::tmp;

fn small_net() -> Network {
    let arch = Architecture::new(192, &[6], None, Decoder::Sigmoid).unwrap();
    let theta = arch.init(4);
    Network::from_theta(arch, &theta)
}

fn dataset(dir: &std::path::Path) -> Dataset {
    let spec = SynthSpec {
        layout: Layout::Cifar10,
        train: 5,
        test: 3,
        unlabeled: 0,
        seed: 2,
    };
    write_dataset(&spec, dir).unwrap();
    Dataset::open(Format::Cifar10, dir, &OpenOptions::default()).unwrap()
}

#[test]
fn pool_is_quadrant_sums_of_concat() {
    let d = tmp();
    let ds = dataset(d.path());
    let norm = Normaliser::Ufldl { pstd: 0.3 };
    let enc = Encoder::new(&small_net(), norm, 8);
    for step in [1, 3, 4, 8, 24] {
        let concat = enc.tile(&ds.train, 0, 5, step, Mode::Concat);
        let pool = enc.tile(&ds.train, 0, 5, step, Mode::Pool);
        let n = sae::data::patches::grid(32, 8, step).len();
        let h = 6;
        assert_eq!(concat.ncols(), n * n * h);
        assert_eq!(pool.ncols(), 4 * h);
        let half = n.div_ceil(2);
        for i in 0..5 {
            let mut want = Array2::<f32>::zeros((4, h));
            for r in 0..n {
                for c in 0..n {
                    let q = usize::from(r >= half) * 2 + usize::from(c >= half);
                    for k in 0..h {
                        want[[q, k]] += concat[[i, (r * n + c) * h + k]];
                    }
                }
            }
            for (a, b) in want.iter().zip(pool.row(i)) {
                assert!((a - b).abs() < 1e-4, "step {step}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn tiled_encoding_equals_naive_per_patch() {
    let d = tmp();
    let ds = dataset(d.path());
    let net = small_net();
    let norm = Normaliser::Ufldl { pstd: 0.3 };
    let enc = Encoder::new(&net, norm.clone(), 8);
    let step = 4;
    let feats = enc.tile(&ds.test, 0, 3, step, Mode::Concat);
    let s = ds.test.shape();
    let mut hwc = vec![0u8; s.pixels()];
    let grid = sae::data::patches::grid(32, 8, step);
    for i in 0..3 {
        ds.test.read_hwc(i, &mut hwc);
        let mut col = 0;
        for &y in &grid {
            for &x in &grid {
                let mut p = Array2::<f32>::zeros((1, 192));
                for c in 0..3 {
                    for r in 0..8 {
                        for q in 0..8 {
                            p[[0, c * 64 + r * 8 + q]] =
                                hwc[((y + r) * 32 + x + q) * 3 + c] as f32 / 255.0;
                        }
                    }
                }
                let code = encode(&net.encoder_layers(), norm.apply(p).view());
                for k in 0..6 {
                    assert!((code[[0, k]] - feats[[i, col]]).abs() < 1e-5);
                    col += 1;
                }
            }
        }
    }
}

#[test]
fn end_to_end_beats_chance_clearly() {
    let d = tmp();
    let cfg_text = format!(
        r#"
name = "e2e"
out_dir = "{}"
seed = 5
[synth]
layout = "cifar10"
train = 600
test = 300
[data]
format = "cifar10"
[patches]
count = 8000
norm = "zca"
[model]
hidden = [32]
decoder = "linear"
rho = 0.035
lambda = 3e-3
beta = 3.0
[train]
max_iter = 60
[features]
steps = [4]
modes = ["pool"]
[classify]
classifiers = ["lr"]
raw_baseline = false
"#,
        d.path().display()
    );
    let cfg_path = d.path().join("e2e.toml");
    std::fs::write(&cfg_path, cfg_text).unwrap();
    let cfg = sae::run::config::Config::load(&cfg_path).unwrap();
    let (dir, results) = sae::run::pipeline::run(&cfg, false).unwrap();
    let acc = results[0].accuracy;
    assert!(
        acc > 0.35,
        "accuracy {acc} is not clearly above chance (0.1)"
    );
    for f in [
        "model.sae",
        "loss.csv",
        "filters.png",
        "patches.png",
        "results.csv",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("e2e,finished,step4-pool,lr,"),
        "{csv}"
    );
    let loss = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    let first: f64 = loss
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let last: f64 = loss
        .lines()
        .last()
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let m = sae::learn::model::Model::load(&dir.join("model.sae")).unwrap();
    assert_eq!(m.net.arch.sizes, vec![192, 32, 192]);
}

#[test]
fn damaged_model_is_refused() {
    let d = tmp();
    let net = small_net();
    let m = sae::learn::model::Model {
        header: sae::learn::model::Header {
            arch: net.arch.clone(),
            norm: Normaliser::Ufldl { pstd: 0.3 },
            patch: 8,
            channels: 3,
            loss: 1.0,
            config: String::new(),
            iterations: 0,
            stop: String::new(),
            learner: None,
        },
        net,
    };
    let p = d.path().join("m.sae");
    m.save(&p).unwrap();
    let back = sae::learn::model::Model::load(&p).unwrap();
    assert_eq!(back.net.theta, m.net.theta);
    let mut bytes = std::fs::read(&p).unwrap();
    let k = bytes.len() / 2;
    bytes[k] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    let e = sae::learn::model::Model::load(&p)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("checksum"), "{e}");
}

/// A store of `count` 8x8 patches of the test dataset in `dir`, normalised by `norm`.
fn patch_store(
    dir: &std::path::Path,
    count: usize,
    norm: sae::data::preprocess::NormSpec,
) -> sae::data::store::Store {
    let ds = dataset(dir);
    let spec = sae::data::patches::PatchSpec {
        size: 8,
        count,
        seed: 1,
    };
    let path = dir.join("p.arrow");
    sae::data::patches::sample_patches(&ds.unlabeled, &spec, norm, &path, 1000, "").unwrap();
    sae::data::store::Store::open(&path, sae::data::store::Kind::Patches).unwrap()
}

#[test]
fn minibatch_training_reduces_the_loss() {
    let d = tmp();
    let store = patch_store(d.path(), 6000, sae::data::preprocess::NormSpec::Ufldl);
    let arch = Architecture::new(192, &[16], None, Decoder::Sigmoid).unwrap();
    let pen = sae::learn::sae::objective::Penalty {
        lambda: 1e-5,
        beta: 3.0,
        rho: 0.05,
    };
    let (start, _) = sae::learn::sae::objective::Objective::new(&arch, pen, &store)
        .eval::<f32>(&arch.init(1))
        .unwrap();
    for opt in ["adam", "sgd"] {
        let tc: sae::run::config::TrainConfig = toml::from_str(&format!(
            "optimizer = \"{opt}\"\nlearning_rate = {}\nbatch_size = 200\nepochs = 3",
            if opt == "adam" { 0.01 } else { 0.1 }
        ))
        .unwrap();
        let job = sae::learn::training::TrainJob::new(arch.clone(), pen, tc.optimiser(), 1);
        let t = sae::learn::training::train(&store, &job, &d.path().join("l.csv")).unwrap();
        assert!(
            t.model.header.loss < 0.5 * start.total,
            "{opt}: {} vs {}",
            t.model.header.loss,
            start.total
        );
        assert_eq!(t.iterations, 3 * 30);
    }
    // A step size 1,000 times too small: as given, Adam barely moves in 3 epochs; the
    // probe finds a working one from it and says which in the model's stop reason.
    let fixed_or_probed = |probe: bool| {
        let tc: sae::run::config::TrainConfig = toml::from_str(&format!(
            "optimizer = \"adam\"\nlearning_rate = 1e-5\nbatch_size = 200\nepochs = 3\nlr_probe = {probe}"
        ))
        .unwrap();
        let job = sae::learn::training::TrainJob::new(arch.clone(), pen, tc.optimiser(), 1);
        sae::learn::training::train(&store, &job, &d.path().join("l.csv")).unwrap()
    };
    let (fixed, probed) = (fixed_or_probed(false), fixed_or_probed(true));
    assert!(
        probed.model.header.loss < 0.5 * fixed.model.header.loss,
        "probed {} vs fixed {}",
        probed.model.header.loss,
        fixed.model.header.loss
    );
    assert!(probed.stop.contains("by probe"), "{}", probed.stop);
    assert!(!fixed.stop.contains("by probe"), "{}", fixed.stop);
    // The probe is deterministic: the same data and seed give the same model.
    assert_eq!(
        fixed_or_probed(true).model.net.theta,
        probed.model.net.theta
    );
}

#[test]
fn holdout_split_is_a_seeded_partition() {
    let (keep, held) = sae::run::pipeline::holdout_split(1000, 0.2, 7);
    assert_eq!((keep.len(), held.len()), (800, 200));
    let mut all: Vec<usize> = keep.iter().chain(&held).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "not a partition");
    assert!(
        held.windows(2).all(|w| w[0] < w[1]),
        "held-out images in file order"
    );
    assert_eq!(sae::run::pipeline::holdout_split(1000, 0.2, 7).1, held);
    assert_ne!(sae::run::pipeline::holdout_split(1000, 0.2, 8).1, held);
    // Spread over the file, not a block at one end.
    assert!(held[0] < 100 && held[199] > 900, "{:?}", &held[..5]);
}

/// With `data.holdout` a run scores held-out training images: the test set is never
/// encoded or scored, and the held-out images feed no other stage.
#[test]
fn holdout_runs_score_training_images_only() {
    let d = tmp();
    let text = format!(
        r#"
name = "val"
out_dir = "{}"
seed = 5
[synth]
layout = "cifar10"
train = 400
test = 150
[data]
format = "cifar10"
holdout = 0.25
[patches]
count = 4000
[model]
hidden = [16]
[train]
max_iter = 5
[features]
steps = [8]
[classify]
classifiers = ["svm"]
raw_baseline = false
"#,
        d.path().display()
    );
    let p = d.path().join("val.toml");
    std::fs::write(&p, text).unwrap();
    let cfg = sae::run::config::Config::load(&p).unwrap();
    let (dir, results) = sae::run::pipeline::run(&cfg, false).unwrap();
    assert!(results[0].accuracy.is_finite());
    let feats: Vec<_> = walk(&dir.join("features"));
    let test = feats
        .iter()
        .find(|f| f.to_string_lossy().ends_with("-test.arrow"))
        .expect("held-out features");
    let train = feats
        .iter()
        .find(|f| f.to_string_lossy().ends_with("-train.arrow"))
        .unwrap();
    let rows = |f: &std::path::Path| {
        sae::data::store::Store::open(f, sae::data::store::Kind::Features)
            .unwrap()
            .rows()
    };
    assert_eq!(rows(test), 100, "held-out images, not the 150 test images");
    assert_eq!(rows(train), 300);
    // Patches come from the 300 kept training images only.
    let store =
        sae::data::store::Store::open(&dir.join("patches.arrow"), sae::data::store::Kind::Patches)
            .unwrap();
    let mut max_image = 0;
    for i in 0..store.batches() {
        let b = store.batch(i).unwrap();
        max_image = max_image.max(*b.column(0).iter().max().unwrap());
    }
    // 4,000 patches from 400 images would reach past image 300 almost surely.
    assert!(
        max_image < 300,
        "a patch from image {max_image} of the 300 kept"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A run of random patches on synthetic CIFAR-10-shaped images (200 training, 100
/// test), soft-threshold codes pooled at step 4 and the svm; `features` adds keys to
/// the `[features]` table.
fn random_patches(dir: &std::path::Path, name: &str, seed: u64, features: &str) -> String {
    format!(
        r#"
name = "{name}"
out_dir = "{}"
seed = {seed}
[synth]
layout = "cifar10"
train = 200
test = 100
[data]
format = "cifar10"
[patches]
count = 3000
size = 6
norm = "zca"
[model]
learner = "random"
hidden = [40]
[features]
steps = [4]
modes = ["pool"]
encoder = "softthreshold"
{features}
[classify]
classifiers = ["svm"]
raw_baseline = false
"#,
        dir.display()
    )
}

/// `model.learner = "random"`: the atoms are distinct patches of the run's store at
/// unit norm, drawn by the seed, and the run goes on to features and a classifier like
/// an autoencoder's; the model says which learner made it.
#[test]
fn random_patch_dictionary_runs_end_to_end() {
    let d = tmp();
    let mut models = Vec::new();
    for seed in [1, 1, 2] {
        let p = d.path().join(format!("rp{seed}.toml"));
        std::fs::write(&p, random_patches(d.path(), &format!("rp{seed}"), seed, "")).unwrap();
        let cfg = sae::run::config::Config::load(&p).unwrap();
        let (dir, results) = sae::run::pipeline::run(&cfg, false).unwrap();
        assert!(results[0].accuracy.is_finite());
        assert_eq!(results[0].stop, sae::learn::dictionary::RANDOM_PATCHES);
        let m = sae::learn::model::Model::load(&dir.join("model.sae")).unwrap();
        assert_eq!(m.header.learner, Some(sae::learn::model::Learner::Random));
        let store = sae::data::store::Store::open(
            &dir.join("patches.arrow"),
            sae::data::store::Kind::Patches,
        )
        .unwrap();
        let w = m.net.weight(0);
        assert_eq!(w.dim(), (40, 108));
        // Every atom is some patch of the store, scaled to unit norm.
        let mut patches: Vec<Vec<f32>> = Vec::new();
        for b in 0..store.batches() {
            let batch = store.batch(b).unwrap();
            patches.extend(batch.values().rows().into_iter().map(|r| r.to_vec()));
        }
        assert_eq!(patches.len(), 3000);
        for atom in w.rows() {
            let norm: f32 = atom.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "atom norm {norm}");
            let found = patches.iter().any(|p| {
                let n: f32 = p.iter().map(|v| v * v).sum::<f32>().sqrt();
                p.iter().zip(atom).all(|(a, b)| (a / n - b).abs() < 1e-5)
            });
            assert!(found, "an atom is not a patch of the store");
        }
        models.push(m.net.theta);
    }
    assert_eq!(models[0], models[1], "the same seed draws the same atoms");
    assert_ne!(models[0], models[2], "another seed draws other atoms");
}

/// OMP-1 keeps its atoms at unit norm and fits the patches better than the random
/// patches it starts from: the mean of max_j (d_j·x)² over the store grows.
#[test]
fn omp1_improves_on_its_random_start() {
    let d = tmp();
    let zca = sae::data::preprocess::NormSpec::Zca {
        contrast: true,
        cn_eps: 10.0 / 65025.0,
        zca_eps: 0.1,
    };
    let store = patch_store(d.path(), 4000, zca);
    let mut x = Vec::new();
    for b in 0..store.batches() {
        x.push(store.batch(b).unwrap().values().to_owned());
    }
    let fit = |m: &sae::learn::model::Model| -> f64 {
        let w = m.net.weight(0);
        let mut sum = 0.0;
        for xb in &x {
            let s = xb.dot(&w.t());
            for r in s.rows() {
                sum += r.iter().map(|v| (*v as f64).powi(2)).fold(0.0, f64::max);
            }
        }
        sum / 4000.0
    };
    let start = sae::learn::dictionary::random_patches(&store, 30, 7).unwrap();
    let (learned, trace) = sae::learn::dictionary::omp1(&store, 30, 5, 7, None).unwrap();
    // Each pass lowers the residual of the one-atom approximations (a power step per
    // atom, then a better assignment); the model reports the last one.
    assert_eq!(trace.len(), 5);
    for w in trace.windows(2) {
        assert!(w[1].loss <= w[0].loss * (1.0 + 1e-6), "{trace:?}");
    }
    assert!(trace[4].loss < trace[0].loss);
    assert_eq!(learned.header.loss, trace[4].loss);
    for atom in learned.net.weight(0).rows() {
        let n: f32 = atom.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "atom norm {n}");
    }
    let (a, b) = (fit(&start), fit(&learned));
    assert!(b > 1.05 * a, "omp-1 {b} vs its random start {a}");
    assert_eq!(
        (learned.header.iterations, learned.header.stop.as_str()),
        (5, "omp-1")
    );
    assert_eq!(learned.header.learner(), sae::learn::model::Learner::Omp1);
    let again = sae::learn::dictionary::omp1(&store, 30, 5, 7, None)
        .unwrap()
        .0;
    assert_eq!(again.net.theta, learned.net.theta);
}

/// `features.precision = "f16"`: the run writes its feature files in f16 under a name
/// that says so, beside (not over) the f32 ones of the same model, and classifies them
/// as well as f32 within the rounding of a few scores.
#[test]
fn f16_feature_files_classify_like_f32() {
    let d = tmp();
    let mut runs = Vec::new();
    for (name, extra) in [("full", ""), ("half", "precision = \"f16\"")] {
        let p = d.path().join(format!("{name}.toml"));
        std::fs::write(&p, random_patches(d.path(), name, 1, extra)).unwrap();
        let cfg = sae::run::config::Config::load(&p).unwrap();
        runs.push(sae::run::pipeline::run(&cfg, false).unwrap());
    }
    let (full, half) = (&runs[0].1[0], &runs[1].1[0]);
    assert_eq!(full.features, "step4-pool-soft0.25");
    assert_eq!(half.features, "step4-pool-soft0.25-f16");
    assert!(full.accuracy > 0.2, "{}", full.accuracy);
    assert!(
        (full.accuracy - half.accuracy).abs() <= 0.03,
        "f32 {} against f16 {}",
        full.accuracy,
        half.accuracy
    );
    let files = walk(&runs[1].0);
    let train = files
        .iter()
        .find(|f| f.to_string_lossy().ends_with("-f16-train.arrow"))
        .unwrap_or_else(|| panic!("no f16 feature file in {files:?}"));
    let store = sae::data::store::Store::open(train, sae::data::store::Kind::Features).unwrap();
    assert_eq!(store.precision(), sae::data::store::Precision::F16);
}

/// `features.flip`: the feature files hold every image and then its mirror (same image
/// number and label, a row of its own), each test image is scored once, and the
/// feature set's name says so in the results.
#[test]
fn flipped_training_images_double_the_training_rows() {
    let d = tmp();
    let text = random_patches(d.path(), "flip", 1, "flip = true");
    let p = d.path().join("flip.toml");
    std::fs::write(&p, text).unwrap();
    let cfg = sae::run::config::Config::load(&p).unwrap();
    let (dir, results) = sae::run::pipeline::run(&cfg, false).unwrap();
    assert_eq!(results[0].features, "step4-pool-soft0.25-flip");
    assert!(results[0].accuracy > 0.2, "{}", results[0].accuracy);
    let files = walk(&dir);
    let open = |suffix: &str| {
        let f = files
            .iter()
            .find(|f| f.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {files:?}"));
        sae::data::store::Store::open(f, sae::data::store::Kind::Features).unwrap()
    };
    let (train, test) = (open("-flip-train.arrow"), open("-flip-test.arrow"));
    assert_eq!((train.rows(), test.rows()), (400, 200));
    let (images, labels) = (train.images().unwrap(), train.labels().unwrap());
    let span = train.span(0, 400).unwrap();
    for i in 0..200 {
        assert_eq!((images[2 * i], images[2 * i + 1]), (i as u32, i as u32));
        assert_eq!(labels[2 * i], labels[2 * i + 1]);
        assert_ne!(span.row(2 * i), span.row(2 * i + 1), "image {i}");
    }
    let pairs: Vec<u32> = (0..100).flat_map(|i| [i, i]).collect();
    assert_eq!(test.images().unwrap(), pairs);
    // Scored per test image: the confusion matrix counts 100 images, not 200 rows.
    let confusion = files
        .iter()
        .find(|f| {
            f.to_string_lossy().contains("confusion") && f.extension().is_some_and(|e| e == "csv")
        })
        .unwrap_or_else(|| panic!("no confusion matrix in {files:?}"));
    let text = std::fs::read_to_string(confusion).unwrap();
    let total: u64 = text
        .lines()
        .skip(1)
        .flat_map(|l| {
            l.split(',')
                .skip(1)
                .map(|v| v.trim().parse::<u64>().unwrap_or(0))
        })
        .sum();
    assert_eq!(total, 100, "{text}");
}
