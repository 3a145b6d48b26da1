//! The bodies of refreshd's fuzz targets. `fuzz/` (cargo-fuzz, libFuzzer) calls them
//! with generated inputs; `tests/corpus.rs` calls them with every committed corpus file,
//! so CI replays the corpora without a fuzzer. Each must return normally for any input:
//! a panic is a bug.

use refreshd_fetch::client::check_url;
use refreshd_fetch::destination::blocked_range;
use refreshd_fetch::DestinationPolicy;
use refreshd_rules::form_config::{check_document, LintContext};
use refreshd_rules::hhmm::parse_time_list;
use refreshd_simulate::{Scenario, Simulation};
use std::net::IpAddr;

/// `form_config.json` parsing and lint (F1–F5).
pub fn form_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let report = check_document(text, LintContext::default());
        // A document without errors yields definitions, and every issue has a path.
        assert_eq!(report.value.is_some(), !report.has_errors());
        assert!(report.issues.iter().all(|i| i.path.starts_with('$')));
    }
}

/// Scenario parsing (section S), and simulation of short valid scenarios.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = Scenario::parse(text) {
        // Simulate only what can finish quickly: a few simulated days.
        if scenario.end.millis_since(scenario.start) <= 3 * 24 * 3_600_000 {
            let _ = Simulation::run(&scenario);
        }
    }
}

/// "HH:MM" lists (F2, F3).
pub fn hhmm_list(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(list) = parse_time_list(text) {
            assert!(
                list.times.windows(2).all(|w| w[0] < w[1]),
                "sorted and distinct"
            );
            assert!(list.times.len() <= 24);
        }
    }
}

/// URL and destination checks: text as a URL, and 4 or 16 bytes as an address.
pub fn destination(data: &[u8]) {
    let policy = DestinationPolicy::new(
        DestinationPolicy::parse_trusted(&["10.1.0.0/16"]).expect("constant"),
    );
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(url) = check_url(&policy, text) {
            // Whatever passed is http(s) without userinfo.
            assert!(matches!(url.scheme(), "http" | "https"));
            assert!(url.username().is_empty() && url.password().is_none());
        }
    }
    let address = match data.len() {
        4 => Some(IpAddr::from(
            <[u8; 4]>::try_from(data).expect("length checked"),
        )),
        16 => Some(IpAddr::from(
            <[u8; 16]>::try_from(data).expect("length checked"),
        )),
        _ => None,
    };
    if let Some(address) = address {
        let blocked = blocked_range(address).is_some();
        // Trust only ever widens what is allowed.
        assert!(policy.check(address).is_ok() || blocked);
    }
}
