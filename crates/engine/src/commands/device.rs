//! A device's own settings: network reports (F16) and time zone (F23a).

use super::{time_zone, Caller};
use crate::engine::Engine;
use crate::error::EngineError;
use refreshd_rules::{DeviceInput, Instant};
use refreshd_store::KeyKind;

pub struct DeviceCommands<'a> {
    pub(crate) engine: &'a Engine,
}

impl DeviceCommands<'_> {
    /// F16: the calling device is online or offline. A device reports an outage after
    /// it ends, so `since` says when it went offline; it is neither in the future nor
    /// before the previous report.
    pub async fn report_network(
        &self,
        caller: &Caller,
        online: bool,
        since: Option<Instant>,
    ) -> Result<(), EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        self.engine
            .with_device(device_id, |device, now, out, _| {
                if let Some(since) = since {
                    if since > now {
                        return Err(EngineError::invalid_request("\"since\" is in the future"));
                    }
                    if device
                        .last_network_report()
                        .is_some_and(|last| since < last)
                    {
                        return Err(EngineError::invalid_request(
                            "\"since\" is before the previous network report",
                        ));
                    }
                }
                if online {
                    if let Some(since) = since {
                        device.apply(since, DeviceInput::Offline, out)?;
                    }
                    device.apply(now, DeviceInput::Online, out)?;
                } else {
                    device.apply(since.unwrap_or(now), DeviceInput::Offline, out)?;
                }
                Ok(())
            })
            .await
    }

    /// F23a: the calling device's zone changed.
    pub async fn set_zone(&self, caller: &Caller, zone: &str) -> Result<(), EngineError> {
        let device_id = caller.require(KeyKind::Device)?;
        let zone = time_zone(zone)?;
        self.engine
            .with_device(device_id, |device, now, out, _| {
                device.apply(now, DeviceInput::SetZone(zone.clone()), out)?;
                Ok(())
            })
            .await
    }
}
