//! The pickle reader: the opcode machine on raw bytes, then the dataset view of a file.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.pkl");
    if let Ok(v) = sae::data::ingest::pickle::load(path, data) {
        if let Some(Ok(a)) = sae::data::ingest::pickle::as_array(&v, data) {
            std::hint::black_box(a.shape.iter().product::<usize>());
        }
    }
    let file = common::put("data_batch.pkl", data);
    if let Ok(set) = sae::data::ingest::pickle::open_file(&file, None) {
        common::touch(&set.images);
    }
});
