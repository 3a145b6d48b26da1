//! Every rule id of the contract has at least one test named after it.
//!
//! Test functions carry the id they check as a prefix or a word of their name
//! (`f12_…`, `…_t5_…`). This test lists the ids from the contract when it is present
//! beside the project (`../shared/spec/refresh-rules.md`), else from the copy below,
//! and looks for them in the names of test functions across the workspace.

/// Test output is captured unless a test fails; a skip must be seen anyway, so it is
/// written to the process's stderr directly.
macro_rules! say_loudly {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::path::{Path, PathBuf};

/// The rule ids of the contract, for clones without `../shared`.
const KNOWN_IDS: &[&str] = &[
    "T1", "T2", "T3", "T4", "T5", "F1", "F2", "F3", "F4", "F4a", "F5", "F6", "F7", "F8", "F9",
    "F10", "F11", "F12", "F13", "F14", "F15", "F16", "F17", "F18", "F19", "F20", "F21", "F22",
    "F23", "F23a", "F24", "P1", "P2", "P3", "P3a", "P4", "P5", "P6", "P7", "P8", "P9", "P10",
    "P11", "P12", "P13", "P14", "P15", "S",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names of functions that follow a `#[test]` or sit inside `proptest!`.
fn test_names() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    let mut names = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let line = line.trim_start();
            if let Some(rest) = line.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        }
    }
    names
}

fn ids_from_contract() -> Option<Vec<String>> {
    let spec = workspace().join("../shared/spec/refresh-rules.md");
    let text = std::fs::read_to_string(spec).ok()?;
    let mut ids = Vec::new();
    for part in text.split("**").skip(1).step_by(2) {
        let id = part.trim_end_matches('.');
        let valid = id.len() <= 4
            && id.starts_with(['T', 'F', 'P'])
            && id[1..].chars().all(|c| c.is_ascii_digit() || c == 'a')
            && id[1..].starts_with(|c: char| c.is_ascii_digit());
        if valid && !ids.contains(&id.to_string()) {
            ids.push(id.to_string());
        }
    }
    Some(ids)
}

#[test]
fn every_rule_id_has_a_named_test() {
    let ids: Vec<String> = match ids_from_contract() {
        Some(ids) => {
            for id in &ids {
                assert!(
                    KNOWN_IDS.contains(&id.as_str()),
                    "the contract has a new rule {id}: add it to KNOWN_IDS and test it"
                );
            }
            ids
        }
        None => {
            say_loudly!("SKIPPED reading ../shared/spec/refresh-rules.md (not present); using the built-in list of rule ids");
            KNOWN_IDS.iter().map(|s| s.to_string()).collect()
        }
    };
    assert!(
        ids.len() >= 45,
        "found only {} rule ids: {ids:?}",
        ids.len()
    );
    let names = test_names();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| {
            let id = id.to_lowercase();
            !names.iter().any(|n| n.split('_').any(|word| word == id))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "rule ids without a test named after them: {missing:?}"
    );
}
