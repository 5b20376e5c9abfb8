//! The STL-10 reader: an images file and a labels file split from one input.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (y, x) = common::split(data);
    let xf = common::put("train_X.bin", x);
    let yf = common::put("train_y.bin", y);
    if let Ok(set) = sae::data::ingest::stl10::open_images(&xf, Some(&yf)) {
        common::touch(&set);
    }
    if let Ok(set) = sae::data::ingest::stl10::open_images(&xf, None) {
        common::touch(&set);
    }
});
