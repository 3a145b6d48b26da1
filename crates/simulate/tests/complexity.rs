//! The driver's work grows with the scenario, not faster: doubling the forms and users
//! of a scenario at most about doubles what the driver does (instants run, device wakes
//! and inputs, pairs looked at). Checked by counting, never by timing.

use refreshd_simulate::run::Work;
use refreshd_simulate::{output, Scenario, Simulation};
use std::fmt::Write as _;

/// A scenario with `forms` forms of mixed configs (six per provider) added over six
/// hours, next-refresh inputs, hides and shows, an outage, `forms / 4` users of one app
/// with periodic fetch, and two simulated days.
fn scenario_text(forms: usize) -> String {
    let start = 1_772_409_600; // 2026-03-02T00:00:00Z
    let at = |seconds: usize| {
        jiff::Timestamp::from_second(start + seconds as i64)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut text = format!(
        r#"{{"start": "{}", "end": "{}", "settings": {{"max_forms": {forms}, "fetch_jitter_minutes": 120}},
"apps": {{"wx1": {{"subject": "organization", "periodic": {{"enabled": true, "url": "https://data.example.com/feed"}}}}}},
"forms": {{"#,
        at(0),
        at(2 * 86_400)
    );
    for i in 0..forms {
        let config = match i % 6 {
            0 => format!(
                r#"{{"name": "w", "updateEnabled": true, "updateDuration": {}}}"#,
                1 + i % 4
            ),
            1 => format!(
                r#"{{"name": "w", "updateEnabled": true, "scheduledUpdateTime": "{:02}:{:02}"}}"#,
                i % 24,
                (i * 7) % 60
            ),
            2 => r#"{"name": "w", "updateEnabled": true, "multiScheduledUpdateTime": "06:15,12:45,18:00"}"#
                .to_string(),
            3 => r#"{"name": "w", "updateEnabled": false}"#.to_string(),
            4 => r#"{"name": "w", "updateEnabled": true, "updateDuration": 2, "scheduledUpdateTime": "09:00"}"#
                .to_string(),
            _ => r#"{"name": "w", "updateEnabled": true, "updateDuration": -1}"#.to_string(),
        };
        let comma = if i + 1 < forms { "," } else { "" };
        let _ = write!(
            text,
            r#""f{i}": {{"provider": "p{}", "config": {config}}}{comma}"#,
            i / 6
        );
    }
    let mut events: Vec<(usize, String)> = Vec::new();
    for i in 0..forms {
        let added = i * 6 * 3600 / forms;
        events.push((added, format!(r#""add_form": "f{i}""#)));
        if i % 6 == 3 {
            events.push((
                added + 600,
                format!(
                    r#""set_next_refresh": {{"form": "f{i}", "minutes": {}}}"#,
                    5 + i % 120
                ),
            ));
        }
        if i % 13 == 0 {
            events.push((added + 3600, format!(r#""hide": "f{i}""#)));
            events.push((added + 3 * 3600, format!(r#""show": "f{i}""#)));
        }
    }
    let users = forms / 4;
    for u in 0..users {
        let launched = u * 6 * 3600 / users;
        events.push((
            launched,
            format!(r#""launch": {{"app": "wx1", "user": "u{u}"}}"#),
        ));
        events.push((
            launched + 60,
            format!(r#""set_token": {{"app": "wx1", "user": "u{u}", "token": "t{u}"}}"#),
        ));
    }
    events.push((8 * 3600, r#""offline": true"#.to_string()));
    events.push((8 * 3600 + 1200, r#""online": true"#.to_string()));
    events.sort_by_key(|(seconds, _)| *seconds);
    text.push_str("},\n\"events\": [\n");
    for (n, (seconds, action)) in events.iter().enumerate() {
        let comma = if n + 1 < events.len() { "," } else { "" };
        let _ = writeln!(text, r#"{{"at": "{}", {action}}}{comma}"#, at(*seconds));
    }
    text.push_str("]}\n");
    text
}

fn work_for(forms: usize) -> (Work, usize) {
    let scenario = Scenario::parse(&scenario_text(forms)).expect("a valid scenario");
    let mut lines = 0;
    let work = Simulation::run_streaming(&scenario, |records| {
        lines += records.len();
        Ok::<(), ()>(())
    })
    .unwrap();
    (work, lines)
}

#[test]
fn doubling_the_forms_at_most_about_doubles_the_drivers_work() {
    let (small, small_lines) = work_for(600);
    let (large, large_lines) = work_for(1200);
    // The scenario must exercise everything counted.
    assert!(small.device_wakes > 0 && small.device_inputs > 0 && small.pairs_visited > 0);
    assert!(small_lines > 0 && large_lines > small_lines);
    let grows_linearly = |what: &str, small: u64, large: u64| {
        // Twice the forms, and some slack for instants two forms happen to share.
        assert!(
            large <= small * 9 / 4 + 16,
            "{what}: {small} for 600 forms, {large} for 1200: more than doubled"
        );
    };
    grows_linearly("instants", small.instants, large.instants);
    grows_linearly("device wakes", small.device_wakes, large.device_wakes);
    grows_linearly("device inputs", small.device_inputs, large.device_inputs);
    grows_linearly("pairs visited", small.pairs_visited, large.pairs_visited);
    // Each pair is looked at a bounded number of times per fetch or input that touches
    // it, not once per instant.
    assert!(
        large.pairs_visited <= 8 * (large_lines as u64),
        "pairs visited {} for {large_lines} lines",
        large.pairs_visited
    );
}

#[test]
fn streaming_gives_the_same_records_as_a_whole_run() {
    let scenario = Scenario::parse(&scenario_text(120)).unwrap();
    let whole = Simulation::run(&scenario);
    let mut streamed = Vec::new();
    Simulation::run_streaming(&scenario, |records| {
        streamed.extend_from_slice(records);
        Ok::<(), ()>(())
    })
    .unwrap();
    assert_eq!(whole, streamed);
    let mut written = Vec::new();
    output::write_json_lines(&whole, &scenario.zone, &mut written).unwrap();
    // The same bytes as one JSON value rendered per line.
    let one_by_one: String = whole
        .iter()
        .map(|r| output::record_json(r, &scenario.zone).to_string() + "\n")
        .collect();
    assert_eq!(String::from_utf8(written).unwrap(), one_by_one);
}

#[test]
fn form_ids_are_found_by_position() {
    let scenario = Scenario::parse(&scenario_text(60)).unwrap();
    for (position, form) in scenario.forms.iter().enumerate() {
        assert_eq!(scenario.form_position(&form.id), Some(position));
    }
    assert_eq!(scenario.form_position("missing"), None);
}
