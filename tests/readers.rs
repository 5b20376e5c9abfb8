//! Dataset readers on generated files, committed fixtures, real images, and corrupt input.

use std::io::Write;
use std::path::Path;

use sae::ingest::synth::{write_dataset, Layout, SynthSpec};
use sae::ingest::{pickle, Dataset, Format, OpenOptions, PixelOrder};

use crate::util::{fixture, fixture_pixel, shared_data, tmp};

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
    let want = sae::ingest::synth::image(ds.train.labels().unwrap()[12] as usize, 32, 3, 12);
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
    let want = sae::ingest::synth::image(l, 96, 3, 5 + 2);
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

fn check_fixture_pixels(set: &sae::ingest::ImageSet) {
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
            // p4 stores 1-based labels; they come back 0-based.
            assert_eq!(p.images.labels().unwrap(), &[0, 3, 9, 3], "{file}");
        }
    }
}

#[test]
fn bad_pickles_are_named() {
    let e = pickle::open_file(&fixture("pickle/p4_float.pk"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("p4_float.pk") && e.contains("float32") || e.contains("f4"),
        "{e}"
    );
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

/// A Python 2 pickle (protocol 2, `str` keys and data as byte strings), built by hand.
fn python2_pickle(n: usize, data: &[u8], labels: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
    let global = |p: &mut Vec<u8>, m: &str, name: &str| {
        p.push(b'c');
        p.extend_from_slice(format!("{m}\n{name}\n").as_bytes());
    };
    let sbs = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    let array = |p: &mut Vec<u8>, shape: &[usize], code: &str, bytes: &[u8]| {
        global(p, "numpy.core.multiarray", "_reconstruct");
        global(p, "numpy", "ndarray");
        p.extend_from_slice(&[b'K', 0, 0x85]);
        sbs(p, b"b");
        p.extend_from_slice(&[0x87, b'R', b'(', b'K', 1]);
        for &d in shape {
            p.push(b'J');
            p.extend_from_slice(&(d as i32).to_le_bytes());
        }
        p.push(if shape.len() == 1 { 0x85 } else { 0x86 });
        global(p, "numpy", "dtype");
        sbs(p, code.as_bytes());
        p.extend_from_slice(&[b'K', 0, b'K', 1, 0x87, b'R']);
        p.extend_from_slice(&[b'(', b'K', 3]);
        sbs(p, b"|");
        p.extend_from_slice(b"NNNJ");
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.push(b'J');
        p.extend_from_slice(&(-1i32).to_le_bytes());
        p.extend_from_slice(&[b'K', 0, b't', b'b', 0x89]);
        p.push(b'T');
        p.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        p.extend_from_slice(bytes);
        p.extend_from_slice(b"tb");
    };
    sbs(&mut p, b"X");
    array(&mut p, &[n, data.len() / n], "u1", data);
    sbs(&mut p, b"y");
    array(&mut p, &[n], "u1", labels);
    p.extend_from_slice(b"u.");
    p
}

#[test]
fn python2_pickles_and_pickle_folders() {
    let d = tmp();
    let mut data = Vec::new();
    for i in 0..4 {
        for y in 0..8 {
            for x in 0..8 {
                for c in 0..3 {
                    data.push(fixture_pixel(i, y, x, c));
                }
            }
        }
    }
    let pk = python2_pickle(4, &data, &[1, 4, 10, 4]);
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
fn real_cifar_images_and_pixel_order_detection() {
    let Some(dir) = shared_data("cifar10-first200-lossless") else {
        return;
    };
    let set = sae::ingest::cifar::open_batches(&dir, &[dir.join("data_batch_1.bin")]).unwrap();
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
    assert_eq!(sae::ingest::layout::detect(&refs, s).0, PixelOrder::Hwc);
    let planar: Vec<&[u8]> = (0..50).map(|i| set.raw(i)).collect();
    assert_eq!(sae::ingest::layout::detect(&planar, s).0, PixelOrder::Cwh);
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
