//! The engine's only source of time. The rules never read a clock (T4); the engine asks
//! one of these and hands the instant in.

use refreshd_rules::Instant;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Tells the time and sleeps until an instant of that time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Resolves once `now() >= at` (or a little later).
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

fn wall_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Real time. A wall clock that jumps is fine: the rules fire nothing twice (T5).
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_millis(wall_now_ms())
    }
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = at.millis_since(self.now()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// Time running `factor` times faster than real time from `epoch` on (`--time-warp`).
/// Nodes sharing a store must use the same factor and epoch.
#[derive(Debug)]
pub struct WarpClock {
    factor: f64,
    epoch_wall_ms: i64,
    epoch_real: std::time::Instant,
    /// Wall time at `epoch_real`.
    started_wall_ms: i64,
}

impl WarpClock {
    /// `epoch_ms`: the instant from which time runs faster (defaults to now).
    pub fn new(factor: f64, epoch_ms: Option<i64>) -> Self {
        let now = wall_now_ms();
        WarpClock {
            factor,
            epoch_wall_ms: epoch_ms.unwrap_or(now),
            epoch_real: std::time::Instant::now(),
            started_wall_ms: now,
        }
    }
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Clock for WarpClock {
    fn now(&self) -> Instant {
        // Real time elapsed since the epoch, scaled.
        let real_since_epoch = (self.started_wall_ms - self.epoch_wall_ms) as f64
            + self.epoch_real.elapsed().as_millis() as f64;
        Instant::from_millis(self.epoch_wall_ms + (real_since_epoch * self.factor) as i64)
    }
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let virtual_wait = at.millis_since(self.now()).max(0) as f64;
        let real_wait = (virtual_wait / self.factor).ceil() as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(real_wait)))
    }
}

/// Time that moves only when a test says so; sleepers wake when it passes their instant.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
    changed: watch::Sender<Instant>,
}

impl ManualClock {
    pub fn new(start: Instant) -> Self {
        ManualClock {
            now: Mutex::new(start),
            changed: watch::channel(start).0,
        }
    }
    /// Moves time forward (or backward, to test clock jumps).
    pub fn set(&self, to: Instant) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
        self.changed.send_replace(to);
    }
    pub fn advance_ms(&self, ms: i64) {
        let to = self.now().plus_millis(ms);
        self.set(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut changes = self.changed.subscribe();
        Box::pin(async move {
            while *changes.borrow_and_update() < at {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}
