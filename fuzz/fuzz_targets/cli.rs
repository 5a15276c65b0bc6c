//! Command-line parsing and config building of the `fixpoint` binary (src/main.rs,
//! included as a module) on arbitrary argument lists: `Ok` or a one-line `Err`, never
//! a panic. Arguments are NUL-separated in the input; nothing is run.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/main.rs"]
mod cli;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut args = vec!["fixpoint".to_string()];
    args.extend(text.split('\0').map(str::to_string));
    if let Err(e) = cli::check_command_line(&args) {
        assert!(!e.trim().is_empty() && !e.trim_end().contains('\n'), "not one line: {e:?}");
    }
});
