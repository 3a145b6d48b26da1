//! Group commit: subject commits that arrive while a transaction is being made durable
//! wait together and are then written in one transaction, with one durable commit.
//!
//! A commit costs one `fsync` (SQLite, `synchronous = FULL`) or one WAL flush
//! (PostgreSQL) whatever it holds, so when many subjects are decided at once (a million
//! due fetches) paying it per subject is what limits a node. Writers hand their commit
//! to a [`GroupWriter`] and wait for its answer; a writer task takes everything queued
//! (up to [`MAX_BATCH`]), writes it, commits once, and only then answers each waiter.
//! Nothing is acknowledged before its batch is committed. No window is waited for: a
//! lone commit is written at once, and batches grow only while the disk is busy, so
//! batching adds no latency when the node is quiet.
//!
//! Each commit in a batch keeps its own outcome: one that lost its version race writes
//! nothing (its guard is its first statement) and answers `Conflict` while the others
//! commit. When a statement fails for another reason (a full disk, a duplicate id), the
//! batch is rolled back and every commit in it is written again in a transaction of its
//! own, so one bad commit never fails its neighbours.

use crate::records::{DeviceCommit, PairCommit};
use crate::{StoreError, StoreResult};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Commits written in one transaction, at most.
pub(crate) const MAX_BATCH: usize = 512;
/// Commits waiting for a writer, at most; further writers wait for room (backpressure).
const QUEUE: usize = 8 * MAX_BATCH;

/// One subject's commit, as the engine hands it over.
pub(crate) enum WriteJob {
    Pair(PairCommit),
    Device(DeviceCommit),
}

impl WriteJob {
    /// The subject's key: a batch is written in key order, so that two batches being
    /// written at once (PostgreSQL) take their row locks in the same order.
    pub(crate) fn sort_key(&self) -> (&str, &str) {
        match self {
            WriteJob::Pair(c) => (&c.record.appid, &c.record.user_id),
            WriteJob::Device(c) => ("", &c.device_id),
        }
    }
}

/// What a job's commit answered: the devices told of new data (pairs), nothing (devices).
pub(crate) type JobResult = StoreResult<Vec<String>>;

pub(crate) struct Queued {
    pub job: WriteJob,
    pub done: oneshot::Sender<JobResult>,
}

/// The writers' side of the queue, shared by the writer tasks of one store.
pub(crate) type Inbox = Arc<Mutex<mpsc::Receiver<Queued>>>;

/// The engine's side: hands a commit to the writer tasks and waits for its answer.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Queued>,
}

impl GroupWriter {
    pub(crate) fn channel() -> (GroupWriter, Inbox) {
        let (queue, inbox) = mpsc::channel(QUEUE);
        (GroupWriter { queue }, Arc::new(Mutex::new(inbox)))
    }

    /// Queues `job` and answers once the transaction holding it has committed (or
    /// failed). Dropping the returned future does not withdraw the job: it may still
    /// commit, exactly as a single transaction dropped during its `COMMIT` may.
    pub(crate) async fn write(&self, job: WriteJob) -> JobResult {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Queued { job, done })
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store's writer stopped".into()))?
    }
}

/// Takes the next batch: waits for one job, then everything already queued behind it.
/// `None` once every sender is gone (the store was dropped).
pub(crate) async fn next_batch(inbox: &Inbox) -> Option<Vec<Queued>> {
    let mut inbox = inbox.lock().await;
    let first = inbox.recv().await?;
    let mut batch = Vec::with_capacity(64);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match inbox.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}
