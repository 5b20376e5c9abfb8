//! Hostile input: every reader of files `sae` did not write, given damaged, lying or
//! absurd files, must return an error that names the file and the problem (never
//! panic, hang or allocate what the file does not hold). Inputs found by fuzzing
//! (`scripts/fuzz.sh`) live under `tests/data/hostile/<target>/` and are replayed here.

use std::path::{Path, PathBuf};

use sae::data::ingest::{cifar, folder, pickle, stl10};
use sae::data::store::{Kind, Store};
use sae::run::config::Config;

use crate::util::{fixture, numpy_pickle, tmp};

type Reader = fn(&Path) -> Result<(), String>;

/// One pickle file read as a labelled file of a 0-based dataset.
fn read_pickle(p: &Path) -> Result<(), String> {
    pickle::open_file(p, None)
        .and_then(|f| f.labelled(0))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn read_cifar(p: &Path) -> Result<(), String> {
    cifar::open_batches(p, &[p.to_path_buf()])
        .map(drop)
        .map_err(|e| e.to_string())
}

fn read_stl(p: &Path) -> Result<(), String> {
    // `<name>` is the images, `<name>.y` the labels when present.
    let y = p.with_extension("y");
    stl10::open_images(p, y.exists().then_some(y.as_path()))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn read_folder(p: &Path) -> Result<(), String> {
    folder::open(p).map(drop).map_err(|e| e.to_string())
}

fn read_config(p: &Path) -> Result<(), String> {
    Config::load(p).map(drop).map_err(|e| e.to_string())
}

fn read_store(p: &Path) -> Result<(), String> {
    let s = Store::open(p, Kind::Patches).map_err(|e| e.to_string())?;
    for i in 0..s.batches() {
        s.batch(i).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn read_checkpoint(p: &Path) -> Result<(), String> {
    let blob = std::fs::read(p).map_err(|e| e.to_string())?;
    sae::learn::checkpoint::decode(p, &blob)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn read_model(p: &Path) -> Result<(), String> {
    sae::learn::model::Model::load(p)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Splits fuzz input in two as the fuzz targets do (a 2-byte split point first).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let at = u16::from_le_bytes([data[0], data[1]]) as usize;
    data[2..].split_at(at.min(data.len() - 2))
}

fn replay_cifar(p: &Path) -> Result<(), String> {
    let data = std::fs::read(p).unwrap();
    let (a, b) = split(&data);
    let files = [p.with_extension("1"), p.with_extension("2")];
    std::fs::write(&files[0], a).unwrap();
    std::fs::write(&files[1], b).unwrap();
    cifar::open_batches(p, &files)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn replay_stl(p: &Path) -> Result<(), String> {
    let data = std::fs::read(p).unwrap();
    let (y, x) = split(&data);
    let (xf, yf) = (p.with_extension("X"), p.with_extension("y"));
    std::fs::write(&xf, x).unwrap();
    std::fs::write(&yf, y).unwrap();
    read_stl(&xf)
}

fn replay_folder(p: &Path) -> Result<(), String> {
    let data = std::fs::read(p).unwrap();
    let Some((&kind, body)) = data.split_first() else {
        return Err("empty".into());
    };
    let ext = if kind & 1 == 0 { "png" } else { "jpg" };
    let root = p.with_extension("dir");
    for sub in ["train/a", "test/a", "unlabeled"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        std::fs::write(root.join(sub).join(format!("x.{ext}")), body).unwrap();
    }
    read_folder(&root)
}

/// The reader each fuzz target drives, fed the way the target feeds it.
fn reader_of(target: &str) -> Option<Reader> {
    Some(match target {
        "pickle" => read_pickle,
        "cifar10" => replay_cifar,
        "stl10" => replay_stl,
        "image_folder" => replay_folder,
        "config" => read_config,
        "patch_store" => read_store,
        "checkpoint" => read_checkpoint,
        "model" => read_model,
        _ => return None,
    })
}

fn le_u32s(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A model file with `header` (JSON) and `params` f32 values, checksum fixed up.
fn model_file(header: &str, params: usize) -> Vec<u8> {
    let mut b = b"SAEMODEL".to_vec();
    b.extend_from_slice(&sae::learn::model::VERSION.to_le_bytes());
    b.extend_from_slice(&(header.len() as u64).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(&vec![0u8; 4 * params]);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn checkpoint_blob(version: u32, body: &[u8]) -> Vec<u8> {
    let mut b = version.to_le_bytes().to_vec();
    b.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    b.extend_from_slice(body);
    b
}

/// (case, file name, bytes, reader, what the error must say).
type Case = (&'static str, &'static str, Vec<u8>, Reader, &'static str);

fn cases() -> Vec<Case> {
    let pk = std::fs::read(fixture("pickle/p4_nhwc.pk")).unwrap();
    let store = std::fs::read(fixture("v1/patches.arrow")).unwrap();
    let model = std::fs::read(fixture("v1/model.sae")).unwrap();
    let cfg = std::fs::read_to_string(fixture("v1/fixture.toml")).unwrap();
    let with = |k: &str, v: &str| -> Vec<u8> {
        let mut t = cfg.clone();
        let (section, key) = k.split_once('.').unwrap();
        let at = t.find(&format!("[{section}]\n")).unwrap() + section.len() + 3;
        t.insert_str(at, &format!("{key} = {v}\n"));
        t.into_bytes()
    };
    let header = |sizes: &str, patch: usize| {
        format!(
            r#"{{"arch":{{"sizes":{sizes},"sparse":1,"decoder":"sigmoid"}},"norm":{{"kind":"ufldl","pstd":0.2}},"patch":{patch},"channels":3,"loss":1.0}}"#
        )
    };
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    let u8s = |n: usize| vec![7u8; n];
    vec![
        (
            "pickle: truncated",
            "cut.pk",
            pk[..pk.len() / 2].to_vec(),
            read_pickle,
            "truncated",
        ),
        (
            "pickle: not a pickle",
            "text.pk",
            b"just some text\n".to_vec(),
            read_pickle,
            "text.pk",
        ),
        (
            "pickle: empty",
            "empty.pk",
            vec![],
            read_pickle,
            "empty file",
        ),
        (
            "pickle: int16 images",
            "i2.pk",
            numpy_pickle(&[("X", &[1, 4, 4, 3], "i2", '<', &u8s(96))]),
            read_pickle,
            "dtype i2",
        ),
        (
            "pickle: shape needs more bytes than the data holds",
            "short.pk",
            numpy_pickle(&[("X", &[10, 32, 32, 3], "u1", '|', &u8s(3072))]),
            read_pickle,
            "needs 30720",
        ),
        (
            "pickle: shape whose size overflows",
            "huge.pk",
            numpy_pickle(&[("X", &[1 << 30, 1 << 30, 1 << 30, 3], "u1", '|', &u8s(48))]),
            read_pickle,
            "needs more than memory holds",
        ),
        (
            "pickle: one dimension",
            "flat.pk",
            numpy_pickle(&[("X", &[48], "u1", '|', &u8s(48))]),
            read_pickle,
            "image array has shape [48]",
        ),
        (
            "pickle: NaN in float images",
            "nan.pk",
            numpy_pickle(&[(
                "X",
                &[2, 2, 2, 3],
                "f4",
                '<',
                &(0..24)
                    .flat_map(|i| if i == 13 { f32::NAN } else { 0.5 }.to_le_bytes())
                    .collect::<Vec<_>>(),
            )]),
            read_pickle,
            "image 1 holds NaN",
        ),
        (
            "pickle: negative float pixels",
            "neg.pk",
            numpy_pickle(&[(
                "X",
                &[1, 2, 2, 3],
                "f8",
                '<',
                &(0..12)
                    .flat_map(|i| (i as f64 - 3.0).to_le_bytes())
                    .collect::<Vec<_>>(),
            )]),
            read_pickle,
            "expected values in [0, 1] or [0, 255]",
        ),
        (
            "pickle: ambiguous N x 3 x H x 3",
            "amb.pk",
            numpy_pickle(&[("X", &[1, 3, 4, 3], "u1", '|', &u8s(36))]),
            read_pickle,
            "set data.pixel_order",
        ),
        (
            "pickle: labels do not match images",
            "labels.pk",
            numpy_pickle(&[
                ("X", &[2, 4, 4, 3], "u1", '|', &u8s(96)),
                ("y", &[3], "u1", '|', &[0, 1, 2]),
            ]),
            read_pickle,
            "3 labels for 2 images",
        ),
        (
            "pickle: label over 255",
            "label300.pk",
            numpy_pickle(&[
                ("X", &[2, 4, 4, 3], "u1", '|', &u8s(96)),
                ("y", &[2], "<i4", '<', &le_u32s(&[0, 300])),
            ]),
            read_pickle,
            "label 300 of image 1",
        ),
        (
            "cifar: empty batch",
            "empty.bin",
            vec![],
            read_cifar,
            "empty file",
        ),
        (
            "cifar: truncated record",
            "cut.bin",
            record(3)[..2000].to_vec(),
            read_cifar,
            "not a multiple of the 3073-byte",
        ),
        (
            "cifar: label 12",
            "label.bin",
            [record(1), record(12)].concat(),
            read_cifar,
            "record 1 has label 12",
        ),
        (
            "stl10: empty",
            "empty_X.bin",
            vec![],
            read_stl,
            "empty file",
        ),
        (
            "stl10: truncated image",
            "cut_X.bin",
            u8s(27648 + 100),
            read_stl,
            "not a multiple of the 27648-byte",
        ),
        (
            "patch store: not Arrow",
            "x.arrow",
            b"ARROW2 nothing".to_vec(),
            read_store,
            "not an Arrow IPC file",
        ),
        (
            "patch store: truncated",
            "cut.arrow",
            store[..store.len() / 2].to_vec(),
            read_store,
            "truncated",
        ),
        (
            "patch store: footer length past the start",
            "footer.arrow",
            {
                let mut s = store.clone();
                let n = s.len();
                s[n - 10..n - 6].copy_from_slice(&(i32::MAX).to_le_bytes());
                s
            },
            read_store,
            "footer too long",
        ),
        (
            "checkpoint: other version",
            "v9.bin",
            checkpoint_blob(9, b"body"),
            read_checkpoint,
            "incompatible checkpoint version 9",
        ),
        (
            "checkpoint: flipped byte",
            "flip.bin",
            {
                let mut b = checkpoint_blob(1, &[1, 2, 3, 4, 5, 6, 7, 8]);
                b[10] ^= 1;
                b
            },
            read_checkpoint,
            "checksum mismatch",
        ),
        (
            "checkpoint: length prefix of 2^62 elements",
            "len.bin",
            checkpoint_blob(1, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40]),
            read_checkpoint,
            "undecodable checkpoint",
        ),
        (
            "checkpoint: too short",
            "short.bin",
            vec![1, 0, 0],
            read_checkpoint,
            "too short",
        ),
        (
            "model: not a model",
            "x.sae",
            b"PNG\x0d\x0a".to_vec(),
            read_model,
            "not an sae model file",
        ),
        (
            "model: other version",
            "v7.sae",
            {
                let mut m = model.clone();
                m[8..12].copy_from_slice(&7u32.to_le_bytes());
                m
            },
            read_model,
            "incompatible model version 7",
        ),
        (
            "model: damaged body",
            "flip.sae",
            {
                let mut m = model.clone();
                let k = m.len() - 9;
                m[k] ^= 0x10;
                m
            },
            read_model,
            "checksum mismatch",
        ),
        (
            "model: header length past the end",
            "hlen.sae",
            {
                let mut b = b"SAEMODEL".to_vec();
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&u64::MAX.to_le_bytes());
                b.extend_from_slice(b"{}");
                let crc = crc32fast::hash(&b);
                b.extend_from_slice(&crc.to_le_bytes());
                b
            },
            read_model,
            "header length exceeds the file",
        ),
        (
            "model: network sizes that overflow",
            "overflow.sae",
            model_file(&header("[48, 4611686018427387904, 48]", 4), 8),
            read_model,
            "parameter block does not match",
        ),
        (
            "model: no hidden layer",
            "nohidden.sae",
            model_file(&header("[48, 48]", 4), 0),
            read_model,
            "impossible network",
        ),
        (
            "model: inputs do not match the patch",
            "patch.sae",
            model_file(&header("[48, 2, 48]", 5), 48 * 2 + 2 + 2 * 48 + 48),
            read_model,
            "do not match 3 channels of 5x5 patches",
        ),
        (
            "config: not TOML",
            "bad.toml",
            b"name = \n[[".to_vec(),
            read_config,
            "invalid config",
        ),
        (
            "config: unknown key",
            "typo.toml",
            with("model.hiden", "[5]"),
            read_config,
            "unknown field `hiden`",
        ),
        (
            "config: step 0",
            "step.toml",
            cfg.replace("steps = [16]", "steps = [0]").into_bytes(),
            read_config,
            "features.steps",
        ),
        (
            "config: empty hidden layer",
            "hidden.toml",
            cfg.replace("hidden = [5]", "hidden = [5, 0]").into_bytes(),
            read_config,
            "model.hidden",
        ),
        (
            "config: rho 1.5",
            "rho.toml",
            with("model.rho", "1.5"),
            read_config,
            "model.rho",
        ),
        (
            "config: patch larger than image",
            "resize.toml",
            with("data.resize", "2"),
            read_config,
            "data.resize",
        ),
        (
            "config: negative count",
            "count.toml",
            cfg.replace("count = 300", "count = -5").into_bytes(),
            read_config,
            "invalid config",
        ),
        (
            "config: memory budget typo",
            "mem.toml",
            format!("max_memory = \"12 parsecs\"\n{cfg}").into_bytes(),
            read_config,
            "max_memory",
        ),
    ]
}

#[test]
fn every_bad_input_gets_an_error_naming_file_and_problem() {
    let d = tmp();
    let mut wrong = Vec::new();
    for (case, name, bytes, read, want) in cases() {
        let p = d.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        match read(&p) {
            Ok(()) => wrong.push(format!("{case}: accepted")),
            Err(e) => {
                // Config checks name the key instead of the file.
                let named = e.contains(name) || e.starts_with("config key");
                if !named || !e.contains(want) {
                    wrong.push(format!("{case}: {e:?} (wanted {want:?})"));
                } else {
                    println!("{case}: {e}");
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn image_folder_with_a_damaged_or_odd_sized_image() {
    let d = tmp();
    let png = |w: u32, h: u32| {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    };
    for split in ["train", "test"] {
        std::fs::create_dir_all(d.path().join(split).join("cat")).unwrap();
        std::fs::write(d.path().join(split).join("cat/a.png"), png(8, 8)).unwrap();
    }
    let bad = d.path().join("train/cat/b.png");
    let mut cut = png(8, 8);
    cut.truncate(cut.len() / 2);
    std::fs::write(&bad, &cut).unwrap();
    let e = read_folder(d.path()).unwrap_err();
    assert!(
        e.contains("b.png") && e.contains("cannot decode image"),
        "{e}"
    );
    std::fs::write(&bad, png(9, 8)).unwrap();
    let e = read_folder(d.path()).unwrap_err();
    assert!(e.contains("b.png") && e.contains("9x8"), "{e}");
    // A PNG header claiming 100000 x 100000 pixels is refused by the decoder's
    // allocation limit, not allocated.
    let mut big = png(8, 8);
    big[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    big[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    std::fs::write(&bad, &big).unwrap();
    let e = read_folder(d.path()).unwrap_err();
    assert!(e.contains("b.png"), "{e}");
}

/// Inputs that once crashed a fuzz target stay fixed: each must now be read or
/// refused without a panic.
#[test]
fn fuzz_findings_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let targets = std::fs::read_dir(&root).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the committed findings are missing)",
            root.display()
        )
    });
    let d = tmp();
    let mut seen = 0;
    for t in targets {
        let t = t.unwrap();
        let target = t.file_name().to_string_lossy().into_owned();
        let read = reader_of(&target).unwrap_or_else(|| panic!("unknown target {target}"));
        for f in std::fs::read_dir(t.path()).unwrap() {
            let f: PathBuf = f.unwrap().path();
            let p = d.path().join(f.file_name().unwrap());
            std::fs::copy(&f, &p).unwrap();
            let r = std::panic::catch_unwind(|| read(&p));
            assert!(r.is_ok(), "{target}/{} panics", f.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "only {seen} findings under {}", root.display());
    println!("{seen} fuzz findings replayed");
}

#[test]
fn cyclic_pickle_is_refused() {
    // A list that appends itself: EMPTY_LIST, MEMOIZE, BINGET 0, APPEND, STOP.
    let d = tmp();
    let p = d.path().join("cycle.pk");
    std::fs::write(&p, [0x80, 4, b']', 0x94, b'h', 0, b'a', b'.']).unwrap();
    let e = read_pickle(&p).unwrap_err();
    assert!(e.contains("cycle.pk") && e.contains("holds itself"), "{e}");
}
