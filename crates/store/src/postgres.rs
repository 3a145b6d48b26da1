//! The fleet backend: PostgreSQL shared by several `refreshd serve` nodes.
//!
//! Same tables and statements as the SQLite backend, with two differences that matter
//! for a fleet: due subjects are claimed with `FOR UPDATE SKIP LOCKED`, so two nodes
//! never claim the same subject, and host events are announced with `NOTIFY`, so an SSE
//! client connected to any node hears of events committed on another.

use crate::records::*;
use crate::{EventBuilder, Store, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

/// The channel on which nodes announce devices with new host events.
const EVENTS_CHANNEL: &str = "refreshd_host_events";

#[derive(Clone)]
pub struct PgStore {
    writer: PgPool,
    reader: PgPool,
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date.
    pub async fn open(url: &str) -> StoreResult<Self> {
        Self::open_in_schema(url, None).await
    }

    /// Connects with every table in `schema` (created if missing): test suites give
    /// each run its own schema in one shared database.
    pub async fn open_in_schema(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .disable_statement_logging();
        if let Some(schema) = schema {
            let mut admin = options.connect().await?;
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                schema.replace('"', "")
            ))
            .execute(&mut admin)
            .await?;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the schema: {e}")))?;
        Ok(PgStore {
            writer: pool.clone(),
            reader: pool,
        })
    }

    pub async fn close(&self) {
        self.writer.close().await;
    }
}

fn provider_from_row(row: &sqlx::postgres::PgRow) -> ProviderRecord {
    ProviderRecord {
        provider: row.get("provider"),
        provider_num: row.get("provider_num"),
        refresh_url: row.get("refresh_url"),
        system_app: row.get::<i64, _>("system_app") != 0,
        api_version: row.get("api_version"),
        market_update_duration: row.get("market_update_duration"),
        signing_secret: row.get("signing_secret"),
        form_config: row.get("form_config"),
        previous_signing_secret: row.get("previous_signing_secret"),
        previous_secret_until: row.get("previous_secret_until"),
    }
}

fn form_from_row(row: &sqlx::postgres::PgRow) -> FormRecord {
    FormRecord {
        form_id: row.get("form_id"),
        form_num: row.get("form_num"),
        device_id: row.get("device_id"),
        provider: row.get("provider"),
        form_name: row.get("form_name"),
        created_at: row.get("created_at"),
    }
}

fn pair_from_row(row: &sqlx::postgres::PgRow) -> PairRecord {
    PairRecord {
        appid: row.get("appid"),
        user_id: row.get("user_id"),
        state: row.get("state"),
        version: row.get("version"),
        next_wake_at: row.get("next_wake_at"),
        token_sealed: row.get("token_sealed"),
        cached_data: row.get("cached_data"),
        cached_at: row.get("cached_at"),
        cached_sent_at: row.get("cached_sent_at"),
        etag: row.get("etag"),
        etag_url: row.get("etag_url"),
    }
}

const FORM_COLUMNS: &str = "form_id, form_num, device_id, provider, form_name, created_at";
const PROVIDER_COLUMNS: &str = "provider, provider_num, refresh_url, system_app, api_version, market_update_duration, signing_secret, form_config, previous_signing_secret, previous_secret_until";
const PAIR_COLUMNS: &str = "appid, user_id, state, version, next_wake_at, token_sealed, cached_data, cached_at, etag, etag_url, cached_sent_at";

async fn insert_key_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    key: &KeyRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_hash, kind, principal, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.key_hash)
    .bind(key.kind.as_str())
    .bind(&key.principal)
    .bind(key.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    event: &NewEvent,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "INSERT INTO events (device_id, form_id, kind, payload, at) VALUES ($1, $2, $3, $4, $5) RETURNING event_id",
    )
    .bind(&event.device_id)
    .bind(&event.form_id)
    .bind(&event.kind)
    .bind(&event.payload)
    .bind(event.at)
    .fetch_one(&mut **tx)
    .await?;
    if let Some(form_id) = &event.form_id {
        sqlx::query(
            "DELETE FROM events WHERE form_id = $1 AND event_id <= (SELECT event_id FROM events WHERE form_id = $1 ORDER BY event_id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(form_id)
        .bind(EVENTS_KEPT_PER_FORM)
        .execute(&mut **tx)
        .await?;
    }
    Ok(row.get(0))
}

/// Stores a form's data with the event that announces it, or, without one, marks it to
/// be announced when the form is shown.
async fn store_form_data(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    data: &FormData,
    event: Option<&NewEvent>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO form_data (form_id, data, updated_at, trigger, announce_on_show) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT(form_id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at,
             trigger = excluded.trigger, announce_on_show = excluded.announce_on_show",
    )
    .bind(&data.form_id)
    .bind(&data.data)
    .bind(data.updated_at)
    .bind(&data.trigger)
    .bind(event.is_none() as i64)
    .execute(&mut **tx)
    .await?;
    if let Some(event) = event {
        insert_event(tx, event).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn insert_key(&self, key: &KeyRecord) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        insert_key_row(&mut tx, key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn find_key(&self, key_hash: &[u8]) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(
            "SELECT key_hash, kind, principal, created_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.and_then(|row| {
            Some(KeyRecord {
                key_hash: row.get("key_hash"),
                kind: KeyKind::parse(row.get::<&str, _>("kind"))?,
                principal: row.get("principal"),
                created_at: row.get("created_at"),
            })
        }))
    }

    async fn rotate_key(&self, new_key: &KeyRecord, now: i64) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE kind = $2 AND principal = $3 AND revoked_at IS NULL")
            .bind(now)
            .bind(new_key.kind.as_str())
            .bind(&new_key.principal)
            .execute(&mut *tx)
            .await?;
        insert_key_row(&mut tx, new_key).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_app(&self, appid: &str, app: &str, key: Option<&KeyRecord>) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO apps (appid, app) VALUES ($1, $2)")
            .bind(appid)
            .bind(app)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_app(&self, appid: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT app FROM apps WHERE appid = $1")
            .bind(appid)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_app(&self, appid: &str, app: &str) -> StoreResult<()> {
        let done = sqlx::query("UPDATE apps SET app = $1 WHERE appid = $2")
            .bind(app)
            .bind(appid)
            .execute(&self.writer)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_provider(
        &self,
        provider: &NewProvider,
        key: Option<&KeyRecord>,
    ) -> StoreResult<ProviderRecord> {
        let mut tx = self.writer.begin().await?;
        let num: i64 = sqlx::query("SELECT COALESCE(MAX(provider_num), 0) + 1 FROM providers")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        sqlx::query(
            "INSERT INTO providers (provider, provider_num, refresh_url, system_app, api_version, signing_secret) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&provider.provider)
        .bind(num)
        .bind(&provider.refresh_url)
        .bind(provider.system_app as i64)
        .bind(provider.api_version)
        .bind(&provider.signing_secret)
        .execute(&mut *tx)
        .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(ProviderRecord {
            provider: provider.provider.clone(),
            provider_num: num,
            refresh_url: provider.refresh_url.clone(),
            system_app: provider.system_app,
            api_version: provider.api_version,
            market_update_duration: None,
            signing_secret: provider.signing_secret.clone(),
            form_config: None,
            previous_signing_secret: None,
            previous_secret_until: None,
        })
    }

    async fn get_provider(&self, provider: &str) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider = $1"
        ))
        .bind(provider)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(provider_from_row))
    }

    async fn provider_by_num(&self, provider_num: i64) -> StoreResult<Option<ProviderRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM providers WHERE provider_num = $1"
        ))
        .bind(provider_num)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(provider_from_row))
    }

    async fn update_provider(&self, p: &ProviderRecord) -> StoreResult<()> {
        let done = sqlx::query(
            "UPDATE providers SET refresh_url = $1, system_app = $2, api_version = $3, market_update_duration = $4, signing_secret = $5, form_config = $6, previous_signing_secret = $7, previous_secret_until = $8 WHERE provider = $9",
        )
        .bind(&p.refresh_url)
        .bind(p.system_app as i64)
        .bind(p.api_version)
        .bind(p.market_update_duration)
        .bind(&p.signing_secret)
        .bind(&p.form_config)
        .bind(&p.previous_signing_secret)
        .bind(p.previous_secret_until)
        .bind(&p.provider)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_device(
        &self,
        device: &DeviceRecord,
        next_wake_at: Option<i64>,
        key: Option<&KeyRecord>,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("INSERT INTO devices (device_id, user_id, state, version, next_wake_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&device.device_id)
            .bind(&device.user_id)
            .bind(&device.state)
            .bind(device.version)
            .bind(next_wake_at)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = key {
            insert_key_row(&mut tx, key).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_device(&self, device_id: &str) -> StoreResult<Option<DeviceRecord>> {
        let row = sqlx::query(
            "SELECT device_id, user_id, state, version FROM devices WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| DeviceRecord {
            device_id: row.get("device_id"),
            user_id: row.get("user_id"),
            state: row.get("state"),
            version: row.get("version"),
        }))
    }

    async fn commit_device(&self, commit: &DeviceCommit) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let updated = sqlx::query(
            "UPDATE devices SET state = $1, version = version + 1, next_wake_at = $2, claimed_by = NULL, claim_until = NULL WHERE device_id = $3 AND version = $4",
        )
        .bind(&commit.state)
        .bind(commit.next_wake_at)
        .bind(&commit.device_id)
        .bind(commit.expected_version)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::Conflict);
        }
        for form in &commit.add_forms {
            sqlx::query(&format!(
                "INSERT INTO forms ({FORM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .bind(&form.form_id)
            .bind(form.form_num)
            .bind(&form.device_id)
            .bind(&form.provider)
            .bind(&form.form_name)
            .bind(form.created_at)
            .execute(&mut *tx)
            .await?;
        }
        for form_id in &commit.remove_forms {
            // Its events go too: the `form_removed` written below is all a host needs.
            for table in ["forms", "form_data", "form_decisions", "events"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE form_id = $1"))
                    .bind(form_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE deliveries SET state = 'failed', next_attempt_at = NULL WHERE form_id = $1 AND state = 'pending'")
                .bind(form_id)
                .execute(&mut *tx)
                .await?;
        }
        for d in &commit.deliveries {
            sqlx::query(
                "INSERT INTO deliveries (delivery_id, form_id, device_id, provider, body, attempts, next_attempt_at, state, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, 'pending', $7)",
            )
            .bind(&d.delivery_id)
            .bind(&d.form_id)
            .bind(&d.device_id)
            .bind(&d.provider)
            .bind(&d.body)
            .bind(d.next_attempt_at)
            .bind(d.created_at)
            .execute(&mut *tx)
            .await?;
        }
        for event in &commit.events {
            insert_event(&mut tx, event).await?;
        }
        for note in &commit.decisions {
            sqlx::query(
                "INSERT INTO form_decisions (form_id, at, decision, rule) VALUES ($1, $2, $3, $4)",
            )
            .bind(&note.form_id)
            .bind(note.at)
            .bind(&note.decision)
            .bind(&note.rule)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM form_decisions WHERE form_id = $1 AND id <= (SELECT id FROM form_decisions WHERE form_id = $2 ORDER BY id DESC LIMIT 1 OFFSET 50)",
            )
            .bind(&note.form_id)
            .bind(&note.form_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_form(&self, form_id: &str) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_id = $1"
        ))
        .bind(form_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(form_from_row))
    }

    async fn form_by_num(&self, form_num: i64) -> StoreResult<Option<FormRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE form_num = $1"
        ))
        .bind(form_num)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(form_from_row))
    }

    async fn forms_of_provider(&self, provider: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE provider = $1 ORDER BY form_num"
        ))
        .bind(provider)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(form_from_row).collect())
    }

    async fn forms_of_device(&self, device_id: &str) -> StoreResult<Vec<FormRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FORM_COLUMNS} FROM forms WHERE device_id = $1 ORDER BY form_num"
        ))
        .bind(device_id)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(form_from_row).collect())
    }

    async fn next_form_num(&self) -> StoreResult<i64> {
        // Never reused: a reused number would make a new form inherit an old one's
        // identity in the rules (F22).
        let row = sqlx::query(
            "INSERT INTO counters (name, value) VALUES ('form_num', 1)
             ON CONFLICT(name) DO UPDATE SET value = counters.value + 1 RETURNING value",
        )
        .fetch_one(&self.writer)
        .await?;
        Ok(row.get(0))
    }

    async fn get_form_data(&self, form_id: &str) -> StoreResult<Option<FormData>> {
        let row = sqlx::query(
            "SELECT form_id, data, updated_at, trigger FROM form_data WHERE form_id = $1",
        )
        .bind(form_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|row| FormData {
            form_id: row.get("form_id"),
            data: row.get("data"),
            updated_at: row.get("updated_at"),
            trigger: row.get("trigger"),
        }))
    }

    async fn put_form_data(&self, data: &FormData, event: Option<&NewEvent>) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        store_form_data(&mut tx, data, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn announce_pending_data(
        &self,
        form_id: &str,
        event_for: &EventBuilder,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await?;
        let row = sqlx::query("SELECT form_id, data, updated_at, trigger FROM form_data WHERE form_id = $1 AND announce_on_show = 1")
            .bind(form_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let data = FormData {
            form_id: row.get("form_id"),
            data: row.get("data"),
            updated_at: row.get("updated_at"),
            trigger: row.get("trigger"),
        };
        insert_event(&mut tx, &event_for(&data)).await?;
        sqlx::query("UPDATE form_data SET announce_on_show = 0 WHERE form_id = $1")
            .bind(form_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn recent_decisions(&self, form_id: &str, limit: i64) -> StoreResult<Vec<DecisionNote>> {
        let rows = sqlx::query("SELECT form_id, at, decision, rule FROM form_decisions WHERE form_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(form_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| DecisionNote {
                form_id: row.get("form_id"),
                at: row.get("at"),
                decision: row.get("decision"),
                rule: row.get("rule"),
            })
            .collect())
    }

    async fn claim_deliveries(
        &self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        // Claiming moves the next attempt to the end of the lease: no other node picks it
        // up meanwhile, and if this node dies it is sent again, under the same id, then.
        let rows = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $1
             WHERE delivery_id IN (SELECT delivery_id FROM deliveries
                 WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $2 AND state = 'pending'
                 ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING delivery_id, form_id, device_id, provider, body, attempts, next_attempt_at",
        )
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        let mut claimed: Vec<DeliveryRecord> = rows
            .iter()
            .map(|row| DeliveryRecord {
                delivery_id: row.get("delivery_id"),
                form_id: row.get("form_id"),
                device_id: row.get("device_id"),
                provider: row.get("provider"),
                body: row.get("body"),
                attempts: row.get("attempts"),
                next_attempt_at: row.get("next_attempt_at"),
            })
            .collect();
        claimed.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
        Ok(claimed)
    }

    async fn finish_delivery(&self, delivery_id: &str, finish: &DeliveryFinish) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let (state, attempts, next): (&str, i64, Option<i64>) = match finish {
            DeliveryFinish::Done { attempts, .. } => ("done", *attempts, None),
            DeliveryFinish::Retry {
                attempts,
                next_attempt_at,
            } => ("pending", *attempts, Some(*next_attempt_at)),
            DeliveryFinish::GiveUp { attempts } => ("failed", *attempts, None),
        };
        let updated = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3 WHERE delivery_id = $4 AND state = 'pending'",
        )
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            // Finished already (or its form was removed): nothing to apply twice.
            return Ok(());
        }
        if let DeliveryFinish::Done {
            data: Some((data, event)),
            ..
        } = finish
        {
            let form_exists = sqlx::query("SELECT 1 FROM forms WHERE form_id = $1")
                .bind(&data.form_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if form_exists {
                store_form_data(&mut tx, data, event.as_ref()).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn events_after(
        &self,
        device_id: &str,
        after_event_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<EventRecord>> {
        let rows = sqlx::query("SELECT event_id, kind, payload, at FROM events WHERE device_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3")
            .bind(device_id)
            .bind(after_event_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| EventRecord {
                event_id: row.get("event_id"),
                kind: row.get("kind"),
                payload: row.get("payload"),
                at: row.get("at"),
            })
            .collect())
    }

    async fn get_pair(&self, appid: &str, user_id: &str) -> StoreResult<Option<PairRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PAIR_COLUMNS} FROM fetch_pairs WHERE appid = $1 AND user_id = $2"
        ))
        .bind(appid)
        .bind(user_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.as_ref().map(pair_from_row))
    }

    async fn commit_pair(&self, commit: &PairCommit) -> StoreResult<()> {
        let r = &commit.record;
        let mut tx = self.writer.begin().await?;
        if commit.expected_version == 0 {
            sqlx::query(&format!(
                "INSERT INTO fetch_pairs ({PAIR_COLUMNS}) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(&r.state)
            .bind(r.next_wake_at)
            .bind(&r.token_sealed)
            .bind(&r.cached_data)
            .bind(r.cached_at)
            .bind(&r.etag)
            .bind(&r.etag_url)
            .bind(r.cached_sent_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Exists => StoreError::Conflict,
                other => other,
            })?;
        } else {
            let updated = sqlx::query(
                "UPDATE fetch_pairs SET state = $1, version = version + 1, next_wake_at = $2, claimed_by = NULL, claim_until = NULL, token_sealed = $3, cached_data = $4, cached_at = $5, etag = $6, etag_url = $7, cached_sent_at = $8
                 WHERE appid = $9 AND user_id = $10 AND version = $11",
            )
            .bind(&r.state)
            .bind(r.next_wake_at)
            .bind(&r.token_sealed)
            .bind(&r.cached_data)
            .bind(r.cached_at)
            .bind(&r.etag)
            .bind(&r.etag_url)
            .bind(r.cached_sent_at)
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(commit.expected_version)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::Conflict);
            }
        }
        if let Some(log) = &commit.log {
            sqlx::query("INSERT INTO fetch_log (appid, user_id, at, gray, outcome, http_status, bytes, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&r.appid)
                .bind(&r.user_id)
                .bind(log.at)
                .bind(log.gray as i64)
                .bind(&log.outcome)
                .bind(log.http_status)
                .bind(log.bytes)
                .bind(log.duration_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM fetch_log WHERE appid = $1 AND user_id = $2 AND id <= (SELECT id FROM fetch_log WHERE appid = $3 AND user_id = $4 ORDER BY id DESC LIMIT 1 OFFSET $5)",
            )
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(&r.appid)
            .bind(&r.user_id)
            .bind(FETCH_LOG_KEPT)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn fetch_log(
        &self,
        appid: &str,
        user_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<FetchLogEntry>> {
        let rows = sqlx::query("SELECT at, gray, outcome, http_status, bytes, duration_ms FROM fetch_log WHERE appid = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3")
            .bind(appid)
            .bind(user_id)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .iter()
            .map(|row| FetchLogEntry {
                at: row.get("at"),
                gray: row.get::<i64, _>("gray") != 0,
                outcome: row.get("outcome"),
                http_status: row.get("http_status"),
                bytes: row.get("bytes"),
                duration_ms: row.get("duration_ms"),
            })
            .collect())
    }

    async fn claim_due(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<(SubjectKey, i64)>> {
        // SKIP LOCKED: rows another node is claiming right now are passed over, so no
        // subject is claimed twice and no node waits for another.
        let mut tx = self.writer.begin().await?;
        let mut claimed = Vec::new();
        let devices = sqlx::query(
            "UPDATE devices SET claimed_by = $1, claim_until = $2
             WHERE device_id IN (SELECT device_id FROM devices
                 WHERE next_wake_at IS NOT NULL AND next_wake_at <= $3 AND (claim_until IS NULL OR claim_until < $4)
                 ORDER BY next_wake_at LIMIT $5 FOR UPDATE SKIP LOCKED)
             RETURNING device_id, next_wake_at",
        )
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for row in devices {
            claimed.push((SubjectKey::Device(row.get(0)), row.get(1)));
        }
        let pairs = sqlx::query(
            "UPDATE fetch_pairs SET claimed_by = $1, claim_until = $2
             WHERE (appid, user_id) IN (SELECT appid, user_id FROM fetch_pairs
                 WHERE next_wake_at IS NOT NULL AND next_wake_at <= $3 AND (claim_until IS NULL OR claim_until < $4)
                 ORDER BY next_wake_at LIMIT $5 FOR UPDATE SKIP LOCKED)
             RETURNING appid, user_id, next_wake_at",
        )
        .bind(node)
        .bind(lease_until)
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        for row in pairs {
            claimed.push((
                SubjectKey::Pair {
                    appid: row.get(0),
                    user_id: row.get(1),
                },
                row.get(2),
            ));
        }
        tx.commit().await?;
        claimed.sort_by_key(|(_, at)| *at);
        Ok(claimed)
    }

    async fn count_due(&self, now: i64) -> StoreResult<i64> {
        // Both counts are range scans on the partial next_wake_at indexes.
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM devices WHERE next_wake_at IS NOT NULL AND next_wake_at <= $1)
                  + (SELECT COUNT(*) FROM fetch_pairs WHERE next_wake_at IS NOT NULL AND next_wake_at <= $2)",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.reader)
        .await?;
        Ok(row.get(0))
    }

    async fn planned_wakeups(&self) -> StoreResult<Vec<(SubjectKey, i64)>> {
        let mut planned = Vec::new();
        for row in sqlx::query(
            "SELECT device_id, next_wake_at FROM devices WHERE next_wake_at IS NOT NULL",
        )
        .fetch_all(&self.reader)
        .await?
        {
            planned.push((SubjectKey::Device(row.get(0)), row.get(1)));
        }
        for row in sqlx::query(
            "SELECT appid, user_id, next_wake_at FROM fetch_pairs WHERE next_wake_at IS NOT NULL",
        )
        .fetch_all(&self.reader)
        .await?
        {
            planned.push((
                SubjectKey::Pair {
                    appid: row.get(0),
                    user_id: row.get(1),
                },
                row.get(2),
            ));
        }
        Ok(planned)
    }

    async fn all_pairs_of_app(&self, appid: &str) -> StoreResult<Vec<PairRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PAIR_COLUMNS} FROM fetch_pairs WHERE appid = $1"
        ))
        .bind(appid)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(pair_from_row).collect())
    }

    async fn publish_host_event(&self, device_id: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(device_id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn forward_host_events(
        &self,
        sink: tokio::sync::broadcast::Sender<String>,
    ) -> StoreResult<()> {
        // Reconnects after a lost connection; notices sent meanwhile are covered by the
        // SSE streams' periodic re-read of the store.
        loop {
            let mut listener = match PgListener::connect_with(&self.writer).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "LISTEN connection failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(EVENTS_CHANNEL).await {
                tracing::warn!(%error, "LISTEN failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match listener.recv().await {
                    Ok(notice) => {
                        let _ = sink.send(notice.payload().to_string());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                        break;
                    }
                }
            }
            if self.writer.is_closed() {
                return Ok(());
            }
        }
    }

    async fn prune(&self, before: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM deliveries WHERE state <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        sqlx::query("DELETE FROM events WHERE at < $1")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}
