//! The checkpoint decoder: version, checksum and body of a blob. The input's checksum
//! is fixed up half of the time so that the body decoder itself gets exercised.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("ckpt.bin");
    let _ = sae::learn::checkpoint::decode(path, data);
    if data.len() >= 8 {
        let mut blob = data.to_vec();
        blob[..4].copy_from_slice(&sae::learn::checkpoint::VERSION.to_le_bytes());
        let crc = crc32fast::hash(&blob[8..]);
        blob[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Ok(c) = sae::learn::checkpoint::decode(path, &blob) {
            std::hint::black_box(c.trace.len());
        }
    }
});
