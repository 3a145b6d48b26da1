//! Replays every committed fuzz corpus file through its target as an ordinary test, so
//! CI checks them without a fuzzer (`fuzz/corpus/<target>/`).

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            run(&std::fs::read(&path).unwrap());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

#[test]
fn form_config_corpus() {
    replay("form_config", refreshd_fuzz_targets::form_config);
}

#[test]
fn scenario_corpus() {
    replay("scenario", refreshd_fuzz_targets::scenario);
}

#[test]
fn hhmm_list_corpus() {
    replay("hhmm_list", refreshd_fuzz_targets::hhmm_list);
}

#[test]
fn destination_corpus() {
    replay("destination", refreshd_fuzz_targets::destination);
}
