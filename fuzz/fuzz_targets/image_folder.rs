//! The image-folder reader: the input as a PNG or JPEG (by its first byte) in a
//! train/test/unlabeled layout next to one valid image.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let ext = if kind & 1 == 0 { "png" } else { "jpg" };
    let root = common::scratch().join("folder");
    let _ = std::fs::remove_dir_all(&root);
    common::put(&format!("folder/train/a/x.{ext}"), body);
    common::put(&format!("folder/test/a/x.{ext}"), body);
    common::put(&format!("folder/unlabeled/u.{ext}"), body);
    if let Ok(ds) = sae::data::ingest::folder::open(&root) {
        common::touch(&ds.train);
        common::touch(&ds.test);
        common::touch(&ds.unlabeled);
    }
});
