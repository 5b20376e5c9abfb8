//! The CIFAR-10 binary reader: two batch files split from one input.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (a, b) = common::split(data);
    let files = vec![
        common::put("data_batch_1.bin", a),
        common::put("data_batch_2.bin", b),
    ];
    if let Ok(set) = sae::data::ingest::cifar::open_batches(common::scratch(), &files) {
        common::touch(&set);
        let _ = set.check_labels(10);
    }
});
