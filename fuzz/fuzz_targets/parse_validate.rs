//! Any bytes through parsing and validation: diagnostics, never a panic, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = baton_workflows::validate::ValidateOptions::default();
    let (_, diagnostics) = baton_workflows::validate::check("fuzz.yaml", data, &options);
    let text = String::from_utf8_lossy(data);
    for diagnostic in diagnostics.iter().take(8) {
        let _ = diagnostic.render(&text);
    }
});
