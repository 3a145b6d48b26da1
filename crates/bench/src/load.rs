//! `refreshd-bench load-pairs`: loads users' pairs into a stopped `refreshd serve`'s
//! embedded store, for the memory and cold-start rows when `refreshd import` is not
//! available. Same state as a token + launch; each pair planned `due_in_seconds` ahead
//! (an idle user base, not a burst of fetches). Sealed with the data directory's key.

use crate::db::{BenchDb, NewPair};
use anyhow::{bail, Context, Result};
use refreshd_engine::secrets::{SecretKey, TokenSealer};
use refreshd_rules::Instant;
use std::path::Path;

fn secret_key(data_dir: &Path) -> Result<SecretKey> {
    let path = data_dir.join("secret.key");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        bail!("{} does not hold 64 hex digits", path.display());
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .with_context(|| format!("{} does not hold 64 hex digits", path.display()))?;
    }
    Ok(SecretKey(key))
}

pub async fn run(data_dir: &Path, appid: &str, users: u32, due_in_seconds: i64) -> Result<()> {
    let sealer = TokenSealer::new(&secret_key(data_dir)?);
    let db = BenchDb::existing_sqlite(&data_dir.join("refreshd.sqlite3")).await?;
    let started = std::time::Instant::now();
    let now = Instant::from_millis(crate::servers::now_ms());
    let wake_at = now.plus_millis(due_in_seconds * 1000).as_millis();
    let pairs: Vec<NewPair> = (0..users)
        .map(|i| NewPair {
            appid: appid.to_string(),
            user_id: format!("u{i}"),
            token: format!("t{i}"),
            wake_at,
        })
        .collect();
    db.load_pairs(&sealer, now, &pairs).await?;
    db.remove().await?;
    println!(
        "{}",
        serde_json::json!({"imported": users, "skipped": 0, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}
