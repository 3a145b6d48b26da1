//! Widgets: a device's forms (F19–F23), the provider's `form_config.json` (F1–F5,
//! F23a), its data and next-refresh requests (F13, F14), and explanations. A form that
//! is not the caller's answers as if it did not exist (api.md).

use super::Caller;
use crate::engine::{delivery_for, new_id, parse_form_config, Engine};
use crate::error::EngineError;
use crate::wire::{form_data_event, form_removed_event};
use refreshd_rules::device::NewForm;
use refreshd_rules::form_config::{ConfigIssue, FormDefinition, MAX_CONFIG_BYTES};
use refreshd_rules::periodic::MAX_BODY_BYTES;
use refreshd_rules::{Accepted, DeviceInput, FormId, Instant, ProviderId, RuleError};
use refreshd_store::{FormData, FormRecord, KeyKind, ProviderRecord};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How many recent decisions an explanation lists.
const RECENT_DECISIONS: i64 = 20;

/// How many placed forms of each definition a config upload removes (F23a), by name.
pub type RemovedForms = BTreeMap<String, usize>;

pub struct FormCommands<'a> {
    pub(crate) engine: &'a Engine,
}

/// A form placed on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedForm {
    pub form_id: String,
}

/// A form's latest data.
#[derive(Clone, Debug, PartialEq)]
pub struct FormDataView {
    pub data: serde_json::Value,
    pub updated_at: Instant,
    /// What produced it: a delivery's trigger, or "provider".
    pub trigger: String,
}

/// A form config accepted (or, in a dry run, that would be).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigApplied {
    pub warnings: Vec<ConfigIssue>,
    pub removed_forms: RemovedForms,
    pub dry_run: bool,
}

/// When a requested next refresh is due (F14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextRefresh {
    pub due_at: Instant,
}

/// A decision, made or planned, in words with the rule that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotedDecision {
    pub at: Instant,
    pub decision: String,
    pub rule: String,
}

/// Why a form did or did not refresh, and what is next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormExplanation {
    pub form_id: String,
    pub form_name: String,
    pub visible: bool,
    pub counted_today: u8,
    pub daily_quota: u8,
    pub quota_resets_at: Option<Instant>,
    pub deferred: Vec<&'static str>,
    pub pending_next_refresh: Option<Instant>,
    pub interval_minutes: Option<i64>,
    /// "HH:MM", in the device's zone.
    pub scheduled_times: Vec<String>,
    pub network_recovery: bool,
    pub data_proxy: bool,
    pub recent_decisions: Vec<NotedDecision>,
    pub next_planned: Vec<NotedDecision>,
}

impl Engine {
    /// Loads a form that `owns` accepts; any other is "not found".
    async fn form_owned_by(
        &self,
        form_id: &str,
        owns: impl Fn(&FormRecord) -> bool,
    ) -> Result<FormRecord, EngineError> {
        match self.store.get_form(form_id).await? {
            Some(form) if owns(&form) => Ok(form),
            _ => Err(EngineError::NotFound("form_not_found")),
        }
    }

    /// How many placed forms of each definition `definitions` would remove (F23a).
    async fn forms_removed_by(
        &self,
        provider: &str,
        definitions: &[FormDefinition],
    ) -> Result<RemovedForms, EngineError> {
        let mut removed = RemovedForms::new();
        for form in self.store.forms_of_provider(provider).await? {
            if !definitions.iter().any(|d| d.name == form.form_name) {
                *removed.entry(form.form_name).or_default() += 1;
            }
        }
        Ok(removed)
    }

    /// F23a: a provider's new `form_config.json` (already checked and stored) or market
    /// interval takes effect: every form of the provider is re-planned, and forms whose
    /// definition disappeared are removed. Returns how many were removed, by definition.
    pub(crate) async fn replan_provider(
        &self,
        provider: &ProviderRecord,
    ) -> Result<RemovedForms, EngineError> {
        let definitions = self.definitions(provider).await?;
        let mut removed = RemovedForms::new();
        let forms = self.store.forms_of_provider(&provider.provider).await?;
        let mut by_device: HashMap<String, Vec<FormRecord>> = HashMap::new();
        for form in forms {
            by_device
                .entry(form.device_id.clone())
                .or_default()
                .push(form);
        }
        for (device_id, forms) in by_device {
            // Counted from the attempt that committed: a change that lost a race runs again.
            let removed_here = self
                .with_device(&device_id, |device, now, out, extras| {
                    let mut removed_here = Vec::new();
                    for form in &forms {
                        let id = FormId(form.form_num as u64);
                        match definitions.iter().find(|d| d.name == form.form_name) {
                            Some(definition) => {
                                let plan = Self::plan_for(provider, definition);
                                let _ =
                                    device.apply(now, DeviceInput::Replan { form: id, plan }, out);
                            }
                            None => {
                                let _ = device.apply(now, DeviceInput::RemoveForm(id), out);
                                removed_here.push(form.form_name.clone());
                                extras.remove_forms.push(form.form_id.clone());
                                extras.events.push(form_removed_event(form, now));
                            }
                        }
                    }
                    Ok(removed_here)
                })
                .await?;
            for name in removed_here {
                *removed.entry(name).or_default() += 1;
            }
        }
        Ok(removed)
    }
}

impl FormCommands<'_> {
    /// A form of the calling device.
    async fn device_form(&self, caller: &Caller, form_id: &str) -> Result<FormRecord, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        self.engine
            .form_owned_by(form_id, |form| form.device_id == device_id)
            .await
    }

    /// A form of the calling provider, with the provider's record.
    async fn provider_form(
        &self,
        caller: &Caller,
        form_id: &str,
    ) -> Result<(FormRecord, ProviderRecord), EngineError> {
        let provider = caller.require(KeyKind::Provider)?;
        let form = self
            .engine
            .form_owned_by(form_id, |form| form.provider == provider)
            .await?;
        let record = self
            .engine
            .store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::Unauthorized)?;
        Ok((form, record))
    }

    /// F19, F22, F23: the calling device places a form of `provider`'s definition
    /// `form_name`, and the provider is asked for its initial data (trigger `add`,
    /// never counted).
    pub async fn add_form(
        &self,
        caller: &Caller,
        provider: &str,
        form_name: &str,
        hidden: bool,
    ) -> Result<AddedForm, EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let engine = self.engine;
        let provider = engine
            .store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::NotFound("form_definition_not_found"))?;
        let definition = engine
            .definitions(&provider)
            .await?
            .iter()
            .find(|d| d.name == form_name)
            .cloned()
            .ok_or(EngineError::NotFound("form_definition_not_found"))?;
        let plan = Engine::plan_for(&provider, &definition);
        let form_num = engine.store.next_form_num().await?;
        let form_id = new_id("frm_");
        let record = FormRecord {
            form_id: form_id.clone(),
            form_num,
            device_id: device_id.to_string(),
            provider: provider.provider.clone(),
            form_name: form_name.to_string(),
            created_at: engine.now().as_millis(),
        };
        engine
            .with_device(device_id, |device, now, out, extras| {
                let input = DeviceInput::AddForm(NewForm {
                    id: FormId(form_num as u64),
                    provider: ProviderId(provider.provider_num as u32),
                    system_app: provider.system_app,
                    plan: Some(plan.clone()),
                    hidden,
                });
                device.apply(now, input, out)?;
                extras
                    .deliveries
                    .push(delivery_for(&record, "add", &[], now));
                extras.add_forms.push(record.clone());
                Ok(())
            })
            .await?;
        Ok(AddedForm { form_id })
    }

    /// F22: the calling device removes a form; the host is told.
    pub async fn remove_form(&self, caller: &Caller, form_id: &str) -> Result<(), EngineError> {
        let form = self.device_form(caller, form_id).await?;
        self.engine
            .with_device(&form.device_id, |device, now, out, extras| {
                device.apply(
                    now,
                    DeviceInput::RemoveForm(FormId(form.form_num as u64)),
                    out,
                )?;
                extras.remove_forms.push(form.form_id.clone());
                extras.events.push(form_removed_event(&form, now));
                Ok(())
            })
            .await
    }

    /// F19–F21: the calling device shows or hides a form. On show, data the provider
    /// sent while the form was hidden is announced to the host.
    pub async fn set_visibility(
        &self,
        caller: &Caller,
        form_id: &str,
        visible: bool,
    ) -> Result<(), EngineError> {
        let form = self.device_form(caller, form_id).await?;
        let engine = self.engine;
        let id = FormId(form.form_num as u64);
        engine
            .with_device(&form.device_id, |device, now, out, _| {
                let input = if visible {
                    DeviceInput::Show(id)
                } else {
                    DeviceInput::Hide(id)
                };
                device.apply(now, input, out)?;
                Ok(())
            })
            .await?;
        if visible {
            let now = engine.now();
            let device_id = form.device_id.clone();
            let event_for = move |data: &FormData| form_data_event(data, &device_id, now);
            if engine
                .store
                .announce_pending_data(&form.form_id, &event_for)
                .await?
            {
                engine.announce_events(&form.device_id);
            }
        }
        Ok(())
    }

    /// The latest data of a form of the calling device.
    pub async fn form_data(
        &self,
        caller: &Caller,
        form_id: &str,
    ) -> Result<FormDataView, EngineError> {
        let form = self.device_form(caller, form_id).await?;
        let data = self
            .engine
            .store
            .get_form_data(&form.form_id)
            .await?
            .ok_or(EngineError::NotFound("no_form_data"))?;
        Ok(FormDataView {
            data: serde_json::from_str(&data.data).unwrap_or(serde_json::Value::Null),
            updated_at: Instant::from_millis(data.updated_at),
            trigger: data.trigger,
        })
    }

    /// The calling provider's own `form_config.json`, as uploaded: every error at once,
    /// or applied whole (F5, F23a), removing placed forms whose definition is gone. With
    /// `dry_run` it says what would happen and applies nothing.
    pub async fn put_form_config(
        &self,
        caller: &Caller,
        provider: &str,
        body: &[u8],
        dry_run: bool,
    ) -> Result<ConfigApplied, EngineError> {
        if caller.require(KeyKind::Provider)? != provider {
            return Err(EngineError::NotFound("not_found"));
        }
        if body.len() > MAX_CONFIG_BYTES {
            return Err(EngineError::TooLarge(format!(
                "a form configuration is limited to {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let text: Arc<str> = Arc::from(
            std::str::from_utf8(body)
                .map_err(|_| EngineError::invalid_request("the body must be UTF-8 JSON"))?,
        );
        let engine = self.engine;
        let mut record = engine
            .store
            .get_provider(provider)
            .await?
            .ok_or(EngineError::NotFound("not_found"))?;
        // Reading a config is CPU work proportional to its size: off the async workers.
        let system_app = record.system_app;
        let parsing = text.clone();
        let report = tokio::task::spawn_blocking(move || parse_form_config(&parsing, system_app))
            .await
            .map_err(|e| EngineError::Corrupt(format!("reading a form config failed: {e}")))?;
        if report.has_errors() {
            return Err(EngineError::Invalid {
                code: "invalid_config",
                message: if dry_run {
                    "the form configuration has errors; it would not be applied (dry run)"
                } else {
                    "the form configuration has errors; nothing was applied"
                }
                .into(),
                details: report.errors().cloned().collect(),
            });
        }
        let warnings: Vec<ConfigIssue> = report.warnings().cloned().collect();
        let definitions: Arc<[FormDefinition]> = Arc::from(report.value.unwrap_or_default());
        if dry_run {
            return Ok(ConfigApplied {
                warnings,
                removed_forms: engine.forms_removed_by(provider, &definitions).await?,
                dry_run: true,
            });
        }
        record.form_config = Some(text.to_string());
        engine.store.update_provider(&record).await?;
        engine.remember_definitions(provider, text, system_app, definitions);
        Ok(ConfigApplied {
            warnings,
            removed_forms: engine.replan_provider(&record).await?,
            dry_run: false,
        })
    }

    /// The calling provider's own update of a form's data (a JSON body): announced to
    /// the host at once, or when the form is next shown if it is hidden.
    pub async fn put_form_data(
        &self,
        caller: &Caller,
        form_id: &str,
        body: &[u8],
    ) -> Result<(), EngineError> {
        let (form, _) = self.provider_form(caller, form_id).await?;
        if body.len() > MAX_BODY_BYTES {
            return Err(EngineError::TooLarge(
                "form data is limited to 262,144 bytes".into(),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| EngineError::invalid_request(format!("the body must be JSON: {e}")))?;
        let engine = self.engine;
        let visible = engine.is_form_visible(&form).await?;
        let now = engine.now();
        let data = FormData {
            form_id: form.form_id.clone(),
            data: value.to_string(),
            updated_at: now.as_millis(),
            trigger: "provider".into(),
        };
        let event = visible.then(|| form_data_event(&data, &form.device_id, now));
        engine.store.put_form_data(&data, event.as_ref()).await?;
        if visible {
            engine.announce_events(&form.device_id);
        }
        Ok(())
    }

    /// F13, F14: the calling provider asks for a refresh of its form in `minutes`.
    pub async fn set_next_refresh(
        &self,
        caller: &Caller,
        form_id: &str,
        minutes: i64,
    ) -> Result<NextRefresh, EngineError> {
        let (form, provider) = self.provider_form(caller, form_id).await?;
        let due_at = self
            .engine
            .with_device(&form.device_id, |device, now, out, _| {
                let input = DeviceInput::SetNextRefresh {
                    form: FormId(form.form_num as u64),
                    caller: ProviderId(provider.provider_num as u32),
                    minutes,
                };
                match device.apply(now, input, out)? {
                    Accepted::NextRefreshAt(at) => Ok(at),
                    Accepted::Done => {
                        Err(EngineError::Rule(RuleError::InvalidNextRefresh { min: 5 }))
                    }
                }
            })
            .await?;
        Ok(NextRefresh { due_at })
    }

    /// Today's count, deferred kinds, pending next-refresh, recent decisions with their
    /// rules, and the next 10 planned refreshes, for the form's device or its provider.
    pub async fn explain_form(
        &self,
        caller: &Caller,
        form_id: &str,
    ) -> Result<FormExplanation, EngineError> {
        let engine = self.engine;
        let form = match caller.kind {
            KeyKind::Device => self.device_form(caller, form_id).await?,
            KeyKind::Provider => {
                engine
                    .form_owned_by(form_id, |form| form.provider == caller.id)
                    .await?
            }
            _ => return Err(EngineError::Unauthorized),
        };
        let device = engine.device_state(&form.device_id).await?;
        // The same explainer as `refreshd explain`: what is overdue happens first, as it
        // will at the next wake-up; nothing is committed.
        let why = refreshd_rules::explain::explain_form(
            &device,
            FormId(form.form_num as u64),
            engine.now(),
            refreshd_rules::explain::PLANNED,
        )
        .ok_or(EngineError::NotFound("form_not_found"))?;
        let recent = engine
            .store
            .recent_decisions(&form.form_id, RECENT_DECISIONS)
            .await?;
        Ok(FormExplanation {
            visible: why.visible,
            counted_today: why.counted_today,
            daily_quota: why.daily_quota,
            quota_resets_at: why.quota_resets_at,
            deferred: refreshd_rules::explain::deferred_names(why.deferred),
            pending_next_refresh: why.pending_next_refresh,
            interval_minutes: why.interval_period_ms.map(|ms| ms / 60_000),
            scheduled_times: why.scheduled_times.iter().map(|t| t.to_string()).collect(),
            network_recovery: why.network_recovery,
            data_proxy: why.data_proxy,
            recent_decisions: recent
                .into_iter()
                .map(|d| NotedDecision {
                    at: Instant::from_millis(d.at),
                    decision: d.decision,
                    rule: d.rule,
                })
                .collect(),
            next_planned: why
                .planned
                .iter()
                .map(|planned| NotedDecision {
                    at: planned.at,
                    decision: planned.decision.to_string(),
                    rule: planned.decision.rule().to_string(),
                })
                .collect(),
            form_id: form.form_id,
            form_name: form.form_name,
        })
    }
}
