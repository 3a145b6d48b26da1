//! The data directory as an operator meets it: bad flags refused before anything is
//! created, one `serve` per directory, and files only their owner can read.

mod support;

use std::process::Command;
use support::{epoch_now, temp_dir, Service};

#[test]
fn a_bad_flag_is_refused_before_the_data_directory_or_a_key_file_exists() {
    let dir = temp_dir("badflag");
    let data = dir.join("data");
    for bad in [
        vec!["--allow-destination", "127.0.0.1/33"],
        vec!["--time-warp", "-2"],
        vec!["--tick-minutes", "31"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_refreshd"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(bad[1].trim_start_matches('-')),
            "{bad:?}: {stderr}"
        );
        assert!(!data.exists(), "{bad:?} created the data directory");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_data_directory_is_refused_and_names_the_first() {
    let dir = temp_dir("lock");
    let first = Service::start(&dir, &epoch_now(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--time-warp", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second serve started");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use by refreshd pid"), "{stderr}");
    let (status, _) = first.call("GET", "/healthz", "", None).await;
    assert_eq!(status, 200, "the first one is untouched");
    // Once the first stops, the directory is free again.
    first.stop();
    let again = Service::start(&dir, &epoch_now(), &[]);
    let (status, _) = again.call("GET", "/healthz", "", None).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_sqlite_file_is_refused_even_with_its_own_data_directory() {
    let dir = temp_dir("storelock");
    let first = Service::start(&dir, &epoch_now(), &[]);
    let other = temp_dir("storelock-other");
    let out = Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(other.join("data"))
        .arg("--store")
        .arg(dir.join("data/refreshd.sqlite3"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second serve shared the store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the store"), "{stderr}");
    assert!(stderr.contains("is in use by refreshd pid"), "{stderr}");
    // The first node's operator key was not replaced.
    let (status, body) = first
        .call(
            "POST",
            "/v1/admin/devices",
            &first.operator,
            Some(serde_json::json!({"device_id": "d1", "user_id": "u1", "zone": "UTC"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_port_in_use_is_reported_before_anything_is_created() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = temp_dir("port");
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_refreshd"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen")
        .arg(taken.local_addr().unwrap().to_string())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    assert!(!data.exists(), "the data directory was created");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_owner_only_and_its_files_owner_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("modes");
    let service = Service::start(&dir, &epoch_now(), &[]);
    let data = dir.join("data");
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert!(
        files >= 4,
        "database, its WAL, the keys and the lock: {files}"
    );
    drop(service);
}
