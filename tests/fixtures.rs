//! Files written by format version 1, committed under `tests/data/v1/` (made by
//! `sae run tests/data/v1/fixture.toml`): later versions must open them, or refuse
//! them with a clear "incompatible version".

use std::path::Path;

use sae::data::store::{Kind, Store};
use sae::learn::checkpoint::{Checkpoints, OptState};
use sae::run::config::Config;

use crate::util::{fixture, tmp};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn version_1_patch_store_opens() {
    let s = Store::open(&fixture("v1/patches.arrow"), Kind::Patches).unwrap();
    assert_eq!((s.rows(), s.dim()), (300, 48));
    assert_eq!(s.meta("sae.patch"), Some("4"));
    let b = s.batch(0).unwrap();
    let v = b.values();
    assert!(v.iter().all(|x| x.is_finite() && *x > 0.0 && *x < 1.0));
}

#[test]
fn version_1_checkpoint_and_model_open() {
    let cfg = Config::load(&fixture("v1/fixture.toml")).unwrap();
    // sled writes to its files when it opens them: work on a copy.
    let d = tmp();
    let db = d.path().join("checkpoint.sled");
    copy_dir(&fixture("v1/checkpoint.sled"), &db);
    // Checkpoints are keyed by the trajectory, which version 1 called the training hash.
    let c = Checkpoints::open(&db, &sae::run::layout::Hashes::of(&cfg).lineage, false).unwrap();
    let latest = c.latest().unwrap().expect("a checkpoint");
    match latest.opt {
        OptState::Lbfgs(s) => assert_eq!(s.iter, 3),
        other => panic!("expected an L-BFGS state, got {other:?}"),
    }
    assert_eq!(latest.trace.len(), 4);
    let m = sae::learn::model::Model::load(&fixture("v1/model.sae")).unwrap();
    assert_eq!(m.net.arch.sizes, vec![48, 5, 48]);
    assert_eq!(m.header.config, sae::run::layout::Hashes::of(&cfg).lineage);
    // A version-1 model does not record its limit, so a run retrains rather than
    // reuse it under a limit it may not have had.
    assert_ne!(m.header.config, sae::run::layout::Hashes::of(&cfg).training);
}

#[test]
fn a_store_of_another_version_is_refused_clearly() {
    let bytes = std::fs::read(fixture("v1/patches.arrow")).unwrap();
    // The version is a metadata value, stored (in the schema at the start and again
    // in the footer) as a length-prefixed "1" just before the length-prefixed key.
    let key = b"\x0b\x00\x00\x00sae.version";
    let mut patched = bytes.clone();
    let mut found = 0;
    for at in 0..bytes.len() - key.len() {
        if &bytes[at..at + key.len()] == key
            && at >= 8
            && &bytes[at - 8..at - 3] == b"\x01\x00\x00\x001"
        {
            patched[at - 4] = b'9';
            found += 1;
        }
    }
    assert!(found >= 1, "version value not found");
    let d = tmp();
    let p = d.path().join("future.arrow");
    std::fs::write(&p, patched).unwrap();
    let e = Store::open(&p, Kind::Patches)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("incompatible store version") && e.contains("future.arrow"),
        "{e}"
    );
}
