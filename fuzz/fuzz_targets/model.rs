//! The model-file reader: magic, version, header, parameter block and checksum. The
//! checksum is fixed up so that the header parser is reached.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let mut buf = b"SAEMODEL".to_vec();
    buf.extend_from_slice(data);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let file = common::put("model.sae", &buf);
    if let Ok(m) = sae::learn::model::Model::load(&file) {
        std::hint::black_box(m.net.theta.len());
    }
});
