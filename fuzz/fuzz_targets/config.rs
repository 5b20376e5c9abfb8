//! The config parser and its checks, on any text.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = sae::run::config::Config::parse(std::path::Path::new("fuzz.toml"), text) {
        // Everything a run derives from an accepted config before doing work.
        std::hint::black_box((sae::run::layout::RunLayout::of(&c), c.run_dir()));
        std::hint::black_box((
            c.train.lbfgs(),
            c.train.minibatch(),
            c.model.penalty(),
            c.patches.norm_spec(),
        ));
    }
});
