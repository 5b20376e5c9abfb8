//! The patch-store reader: Arrow IPC footer, schema, batches and their columns.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let file = common::put("patches.arrow", data);
    for kind in [sae::data::store::Kind::Patches, sae::data::store::Kind::Features] {
        let Ok(store) = sae::data::store::Store::open(&file, kind) else {
            continue;
        };
        for i in 0..store.batches() {
            if let Ok(b) = store.batch(i) {
                let v = b.values();
                std::hint::black_box(v.iter().fold(0f32, |a, x| a + x));
                for k in 0..kind.columns().len() {
                    assert_eq!(b.column(k).len(), b.rows(), "one value per row");
                }
            }
        }
    }
});
