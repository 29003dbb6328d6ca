//! The hardware abstraction: what a roaster is to the bridge. A driver connects, reads one
//! sample at a time, applies a control, and closes; the bridge owns everything else (sessions,
//! publishing, commands). Two drivers: [`sim`], a live engine that obeys commands, and
//! [`crate::modbus`], a roaster's controller over Modbus TCP.

pub mod sim;

use std::future::Future;

use model::Channels;
use model::command::Control;
use serde_json::{Map, Value};

use crate::config::{DeviceConfig, DriverKind};
use crate::modbus::ModbusDriver;

/// What one read gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A sample of the roaster's channels.
    Sample(Channels),
    /// The roast just ended (the beans were dropped): the bridge ends the session and starts
    /// the next one with the next sample.
    RoastEnded,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DriverError {
    /// The roaster cannot be reached (connection refused or lost, a timeout): retried.
    #[error("roaster unreachable: {0}")]
    Unreachable(String),
    /// The roaster answered, but not what was asked (an exception code, a bad value).
    #[error("roaster refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Config(String),
}

/// A roaster, as the bridge drives it.
pub trait Driver: Send {
    /// Opens the connection; called again after an error, until it succeeds.
    fn connect(&mut self) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// One sample, now.
    fn read(&mut self) -> impl Future<Output = Result<Reading, DriverError>> + Send;
    /// Sets `control` to `value` (% of its range); returns once the roaster took it.
    fn apply(
        &mut self,
        control: Control,
        value: f64,
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// Extra fields of the session start message (what the driver knows of the roast).
    fn session_start_metadata(&self) -> Map<String, Value> {
        Map::new()
    }
    /// Extra fields of the session end message.
    fn session_end_metadata(&self) -> Map<String, Value> {
        Map::new()
    }
}

/// Any configured driver: static dispatch over the kinds there are.
pub enum AnyDriver {
    // Boxed: a simulation's state is a kilobyte or so, a Modbus client's a pointer's worth.
    Sim(Box<sim::SimDriver>),
    Modbus(ModbusDriver),
}

impl AnyDriver {
    pub fn new(device: &DeviceConfig, sample_interval_ms: u64) -> Result<AnyDriver, DriverError> {
        match device.driver {
            DriverKind::Sim => Ok(AnyDriver::Sim(Box::new(sim::SimDriver::new(
                device.sim.clone(),
                sample_interval_ms,
            )?))),
            DriverKind::ModbusTcp => {
                let settings = device.modbus.clone().ok_or_else(|| {
                    DriverError::Config("modbus-tcp needs its [modbus] settings".into())
                })?;
                Ok(AnyDriver::Modbus(ModbusDriver::new(settings)?))
            }
        }
    }
}

impl Driver for AnyDriver {
    async fn connect(&mut self) -> Result<(), DriverError> {
        match self {
            AnyDriver::Sim(d) => d.connect().await,
            AnyDriver::Modbus(d) => d.connect().await,
        }
    }

    async fn read(&mut self) -> Result<Reading, DriverError> {
        match self {
            AnyDriver::Sim(d) => d.read().await,
            AnyDriver::Modbus(d) => d.read().await,
        }
    }

    async fn apply(&mut self, control: Control, value: f64) -> Result<(), DriverError> {
        match self {
            AnyDriver::Sim(d) => d.apply(control, value).await,
            AnyDriver::Modbus(d) => d.apply(control, value).await,
        }
    }

    async fn close(&mut self) {
        match self {
            AnyDriver::Sim(d) => d.close().await,
            AnyDriver::Modbus(d) => d.close().await,
        }
    }

    fn session_start_metadata(&self) -> Map<String, Value> {
        match self {
            AnyDriver::Sim(d) => d.session_start_metadata(),
            AnyDriver::Modbus(d) => d.session_start_metadata(),
        }
    }

    fn session_end_metadata(&self) -> Map<String, Value> {
        match self {
            AnyDriver::Sim(d) => d.session_end_metadata(),
            AnyDriver::Modbus(d) => d.session_end_metadata(),
        }
    }
}
