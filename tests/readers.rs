//! Dataset readers on generated files, committed fixtures, real images, and corrupt input.

use std::io::Write;
use std::path::Path;

use sae::data::ingest::synth::{write_dataset, Layout, SynthSpec};
use sae::data::ingest::{pickle, Dataset, Format, OpenOptions, PixelOrder};

use crate::util::{fixture, fixture_hwc, fixture_pixel, numpy_pickle, shared_data, tmp};

fn synth(layout: Layout, dir: &Path, train: usize, test: usize, unlabeled: usize) {
    let spec = SynthSpec {
        layout,
        train,
        test,
        unlabeled,
        seed: 3,
    };
    write_dataset(&spec, dir).unwrap();
}

fn err_of(format: Format, dir: &Path) -> String {
    match Dataset::open(format, dir, &OpenOptions::default()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cifar_layout_round_trip() {
    let d = tmp();
    synth(Layout::Cifar10, d.path(), 23, 7, 0);
    let ds = Dataset::open(Format::Cifar10, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (23, 7));
    assert_eq!(ds.unlabeled.len(), 23);
    assert_eq!(ds.classes.len(), 10);
    // Image 12 lies in the third batch file; its pixels must equal the generator's.
    let want = sae::data::ingest::synth::image(ds.train.labels().unwrap()[12] as usize, 32, 3, 12);
    let mut got = vec![0u8; 32 * 32 * 3];
    ds.train.read_hwc(12, &mut got);
    assert_eq!(got, want);
}

#[test]
fn stl_layout_round_trip_and_fallback() {
    let d = tmp();
    synth(Layout::Stl10, d.path(), 5, 4, 6);
    let ds = Dataset::open(Format::Stl10, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!(
        (ds.train.len(), ds.test.len(), ds.unlabeled.len()),
        (5, 4, 6)
    );
    let l = ds.test.labels().unwrap()[2] as usize;
    let want = sae::data::ingest::synth::image(l, 96, 3, 5 + 2);
    let mut got = vec![0u8; 96 * 96 * 3];
    ds.test.read_hwc(2, &mut got);
    assert_eq!(got, want, "STL planes are column-major");
    std::fs::remove_file(d.path().join("unlabeled_X.bin")).unwrap();
    let ds = Dataset::open(Format::Stl10, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!(ds.unlabeled.len(), 5);
    assert!(ds.notes.iter().any(|n| n.contains("train_X.bin")));
}

#[test]
fn cifar_corrupt_files_are_named() {
    let d = tmp();
    synth(Layout::Cifar10, d.path(), 10, 4, 0);
    let f = d.path().join("data_batch_2.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let e = err_of(Format::Cifar10, d.path());
    assert!(
        e.contains("data_batch_2.bin") && e.contains("multiple"),
        "{e}"
    );

    std::fs::write(&f, &bytes).unwrap();
    let mut bad = bytes.clone();
    bad[3073] = 12;
    std::fs::write(&f, &bad).unwrap();
    let e = err_of(Format::Cifar10, d.path());
    assert!(
        e.contains("data_batch_2.bin") && e.contains("label 12"),
        "{e}"
    );

    std::fs::write(&f, b"").unwrap();
    let e = err_of(Format::Cifar10, d.path());
    assert!(e.contains("empty"), "{e}");

    std::fs::remove_file(d.path().join("test_batch.bin")).unwrap();
    let e = err_of(Format::Cifar10, d.path());
    assert!(e.contains("test_batch.bin"), "{e}");
}

#[test]
fn stl_corrupt_files_are_named() {
    let d = tmp();
    synth(Layout::Stl10, d.path(), 3, 2, 0);
    let y = d.path().join("train_y.bin");
    std::fs::write(&y, [1u8, 2]).unwrap();
    let e = err_of(Format::Stl10, d.path());
    assert!(e.contains("train_y.bin") && e.contains("2 labels"), "{e}");
    std::fs::write(&y, [1u8, 0, 10]).unwrap();
    let e = err_of(Format::Stl10, d.path());
    assert!(e.contains("label 0"), "{e}");
    std::fs::write(&y, [1u8, 11, 10]).unwrap();
    assert!(err_of(Format::Stl10, d.path()).contains("label 11"));
    std::fs::write(&y, [1u8, 2, 3]).unwrap();
    let x = d.path().join("test_X.bin");
    let mut f = std::fs::OpenOptions::new().append(true).open(&x).unwrap();
    f.write_all(&[0; 5]).unwrap();
    let e = err_of(Format::Stl10, d.path());
    assert!(e.contains("test_X.bin") && e.contains("multiple"), "{e}");
}

fn check_fixture_pixels(set: &sae::data::ingest::ImageSet) {
    let mut got = vec![0u8; 8 * 8 * 3];
    for i in 0..4 {
        set.read_hwc(i, &mut got);
        for y in 0..8 {
            for x in 0..8 {
                for c in 0..3 {
                    assert_eq!(got[(y * 8 + x) * 3 + c], fixture_pixel(i, y, x, c));
                }
            }
        }
    }
}

#[test]
fn pickles_of_every_protocol() {
    for (file, order) in [
        ("p2_flat_hwc.pk", PixelOrder::Hwc),
        ("p3_chw.pk", PixelOrder::Chw),
        ("p4_nhwc.pk", PixelOrder::Hwc),
        ("p5_bare_flat_cwh.pk", PixelOrder::Cwh),
    ] {
        let p = pickle::open_file(&fixture(&format!("pickle/{file}")), None).unwrap();
        assert_eq!(p.images.order(), order, "{file}: {}", p.note);
        assert_eq!(p.images.len(), 4);
        check_fixture_pixels(&p.images);
        if file != "p5_bare_flat_cwh.pk" {
            // A file's labels come as stored (p4's are 1-based); its dataset decides
            // the base, and read from it they are 0-based.
            let base = if file == "p4_nhwc.pk" { 1 } else { 0 };
            let stored: Vec<i64> = [0, 3, 9, 3].iter().map(|v| v + base).collect();
            assert_eq!(p.labels.as_deref(), Some(&stored[..]), "{file}");
            let set = p.labelled(base as u8).unwrap();
            assert_eq!(set.labels().unwrap(), &[0, 3, 9, 3], "{file}");
        }
    }
}

#[test]
fn float_pickles_are_scaled_and_nan_is_named() {
    // Float32 in [0, 255] keeps its values.
    let p = pickle::open_file(&fixture("pickle/p4_float.pk"), None).unwrap();
    check_fixture_pixels(&p.images);
    let data = fixture_hwc();
    // Big-endian float64 in [0, 1] is scaled by 255.
    let unit: Vec<u8> = data
        .iter()
        .flat_map(|&v| (f64::from(v) / 255.0).to_be_bytes())
        .collect();
    let d = tmp();
    let f = d.path().join("unit.pk");
    std::fs::write(&f, numpy_pickle(&[("X", &[4, 8, 8, 3], "f8", '>', &unit)])).unwrap();
    check_fixture_pixels(&pickle::open_file(&f, None).unwrap().images);
    // A NaN in image 2 is reported with that index.
    let mut vals: Vec<f32> = data.iter().map(|&v| f32::from(v)).collect();
    vals[2 * 192 + 17] = f32::NAN;
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&f, numpy_pickle(&[("X", &[4, 8, 8, 3], "f4", '<', &bytes)])).unwrap();
    let e = pickle::open_file(&f, None).err().unwrap().to_string();
    assert!(
        e.contains("unit.pk") && e.contains("image 2") && e.contains("NaN"),
        "{e}"
    );
    // Values outside both ranges are refused, naming the first image outside.
    vals[2 * 192 + 17] = 300.0;
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&f, numpy_pickle(&[("X", &[4, 8, 8, 3], "f4", '<', &bytes)])).unwrap();
    let e = pickle::open_file(&f, None).err().unwrap().to_string();
    assert!(e.contains("image 2") && e.contains("[0, 255]"), "{e}");
}

#[test]
fn bad_pickles_are_named() {
    let e = pickle::open_file(&fixture("pickle/p4_no_x.pk"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no `X`"), "{e}");
    let d = tmp();
    let bytes = std::fs::read(fixture("pickle/p4_nhwc.pk")).unwrap();
    let f = d.path().join("cut.pk");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = pickle::open_file(&f, None).err().unwrap().to_string();
    assert!(e.contains("cut.pk") && e.contains("truncated"), "{e}");
    std::fs::write(&f, b"not a pickle at all").unwrap();
    assert!(pickle::open_file(&f, None).is_err());
}

#[test]
fn python2_pickles_and_pickle_folders() {
    let d = tmp();
    let data = fixture_hwc();
    let pk = numpy_pickle(&[
        ("X", &[4, data.len() / 4], "u1", '|', &data),
        ("y", &[4], "u1", '|', &[1, 4, 10, 4]),
    ]);
    for name in ["train.pk", "test.pk", "X1.pk", "X2.pk"] {
        std::fs::write(d.path().join(name), &pk).unwrap();
    }
    let ds = Dataset::open(Format::Pickle, d.path(), &OpenOptions::default()).unwrap();
    check_fixture_pixels(&ds.train);
    assert_eq!(ds.train.labels().unwrap(), &[0, 3, 9, 3]);
    assert_eq!(ds.unlabeled.len(), 8, "X1.pk and X2.pk are joined");
    assert!(
        ds.notes.iter().any(|n| n.contains("detected")),
        "{:?}",
        ds.notes
    );
}

#[test]
#[ignore = "reads ../shared/data, outside the repository; .ci/run runs it"]
fn real_cifar_images_and_pixel_order_detection() {
    let dir = shared_data("cifar10-first200-lossless");
    let set =
        sae::data::ingest::cifar::open_batches(&dir, &[dir.join("data_batch_1.bin")]).unwrap();
    assert_eq!(set.len(), 200);
    // Re-encode real images as a flat HWC array and as STL-style planes: detection
    // must tell interleaved from planar on natural images.
    let s = set.shape();
    let mut hwc = vec![0u8; s.pixels()];
    let recs: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            set.read_hwc(i, &mut hwc);
            hwc.clone()
        })
        .collect();
    let refs: Vec<&[u8]> = recs.iter().map(|r| r.as_slice()).collect();
    assert_eq!(
        sae::data::ingest::layout::detect(&refs, s).0,
        PixelOrder::Hwc
    );
    let planar: Vec<&[u8]> = (0..50).map(|i| set.raw(i)).collect();
    assert_eq!(
        sae::data::ingest::layout::detect(&planar, s).0,
        PixelOrder::Cwh
    );
}

fn png(path: &Path, w: u32, h: u32, v: u8) {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 7) as u8, (y * 9) as u8]))
        .save(path)
        .unwrap();
}

#[test]
fn image_folders() {
    let d = tmp();
    for (split, n) in [("train", 3), ("test", 2)] {
        for class in ["cat", "dog"] {
            let c = d.path().join(split).join(class);
            std::fs::create_dir_all(&c).unwrap();
            for k in 0..n {
                png(&c.join(format!("{k}.png")), 12, 10, k as u8 * 40);
            }
        }
    }
    let ds = Dataset::open(Format::Folder, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!(ds.classes, vec!["cat", "dog"]);
    assert_eq!(ds.train.len(), 6);
    assert_eq!(ds.train.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!((ds.train.shape().height, ds.train.shape().width), (10, 12));
    let mut px = vec![0u8; 360];
    ds.train.read_hwc(1, &mut px);
    assert_eq!(&px[..3], &[40, 0, 0]);

    png(&d.path().join("test/dog/odd.png"), 11, 10, 0);
    let e = err_of(Format::Folder, d.path());
    assert!(e.contains("odd.png") && e.contains("11x10"), "{e}");
    std::fs::write(d.path().join("test/dog/odd.png"), b"garbage").unwrap();
    let e = err_of(Format::Folder, d.path());
    assert!(e.contains("odd.png") && e.contains("decode"), "{e}");
    std::fs::remove_file(d.path().join("test/dog/odd.png")).unwrap();
    std::fs::create_dir_all(d.path().join("test/bird")).unwrap();
    let e = err_of(Format::Folder, d.path());
    assert!(e.contains("bird"), "{e}");
}

#[test]
fn empty_folder_is_an_error() {
    let d = tmp();
    std::fs::create_dir_all(d.path().join("train/a")).unwrap();
    std::fs::create_dir_all(d.path().join("test/a")).unwrap();
    let e = err_of(Format::Folder, d.path());
    assert!(e.contains("no PNG/JPEG"), "{e}");
}

/// A pickled dataset of `n` 4x4 images per file with the given labels.
fn pickled_dataset(dir: &Path, train: &[i64], test: &[i64]) {
    for (name, labels) in [("train.pk", train), ("test.pk", test)] {
        let n = labels.len();
        let pixels: Vec<u8> = (0..n * 48).map(|i| (i * 7 % 251) as u8).collect();
        let y: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = numpy_pickle(&[
            ("X", &[n, 4, 4, 3], "u1", '|', &pixels),
            ("y", &[n], "i8", '<', &y),
        ]);
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The label base is one decision for the whole dataset: a test file that lacks
/// class 0 must not be shifted while the training file keeps its labels.
#[test]
fn label_base_is_decided_once_per_dataset() {
    let d = tmp();
    let train: Vec<i64> = (0..20).map(|i| i % 10).collect();
    let test: Vec<i64> = (0..9).map(|i| 1 + i % 9).collect(); // no class 0
    pickled_dataset(d.path(), &train, &test);
    let ds = Dataset::open(Format::Pickle, d.path(), &OpenOptions::default()).unwrap();
    let want0: Vec<u8> = test.iter().map(|&v| v as u8).collect();
    assert_eq!(ds.test.labels().unwrap(), &want0[..], "test labels moved");
    assert_eq!(
        ds.train.labels().unwrap()[..10],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert!(
        ds.notes
            .iter()
            .any(|n| n.contains("0-based") && n.contains("train.pk")),
        "{:?}",
        ds.notes
    );

    // 1-based in every file (as STL-10's pickles): both shift, together.
    let d = tmp();
    let train1: Vec<i64> = (0..20).map(|i| 1 + i % 10).collect();
    let test1: Vec<i64> = (0..9).map(|i| 2 + i % 9).collect();
    pickled_dataset(d.path(), &train1, &test1);
    let ds = Dataset::open(Format::Pickle, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!(
        ds.train.labels().unwrap()[..10],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    let want: Vec<u8> = test1.iter().map(|&v| v as u8 - 1).collect();
    assert_eq!(ds.test.labels().unwrap(), &want[..]);
    assert!(
        ds.notes.iter().any(|n| n.contains("1-based")),
        "{:?}",
        ds.notes
    );

    // The config can say it; a base the labels contradict is an error naming the file.
    let opts = OpenOptions {
        label_base: Some(0),
        ..OpenOptions::default()
    };
    let ds = Dataset::open(Format::Pickle, d.path(), &opts).unwrap();
    assert_eq!(ds.train.labels().unwrap()[0], 1);
    let d = tmp();
    pickled_dataset(d.path(), &train, &test);
    let opts = OpenOptions {
        label_base: Some(1),
        ..OpenOptions::default()
    };
    let e = Dataset::open(Format::Pickle, d.path(), &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("train.pk") && e.contains("label 0"), "{e}");

    // An unlabeled file's labels are ignored, whatever they hold (-1 markers here).
    let d = tmp();
    pickled_dataset(d.path(), &train, &test);
    let pixels: Vec<u8> = (0..5 * 48).map(|i| (i * 3 % 251) as u8).collect();
    let marks: Vec<u8> = [-1i64; 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(
        d.path().join("unlabeled.pk"),
        numpy_pickle(&[
            ("X", &[5, 4, 4, 3], "u1", '|', &pixels),
            ("y", &[5], "i8", '<', &marks),
        ]),
    )
    .unwrap();
    let ds = Dataset::open(Format::Pickle, d.path(), &OpenOptions::default()).unwrap();
    assert_eq!(ds.unlabeled.len(), 5);
    assert_eq!(ds.test.labels().unwrap(), &want0[..]);

    // `sae info` reports the decision.
    let d = tmp();
    pickled_dataset(d.path(), &train, &test);
    let (ok, out, err) = crate::util::run_bin(
        &["info", "--format", "pickle", d.path().to_str().unwrap()],
        d.path(),
    );
    assert!(ok, "{err}");
    assert!(out.contains("labels: 0-based"), "{out}");
}
