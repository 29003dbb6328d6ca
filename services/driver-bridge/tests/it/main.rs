//! driver-bridge's specification, driven through its public surfaces: a real broker (the
//! shared Mosquitto, or a private one that the test stops), the device contract read back over
//! MQTT, commands signed with a real Ed25519 key, and (store and forward) ingestion storing
//! what the bridge published. `commands`: what a device obeys and what it refuses;
//! `modbus`: the modbus-tcp driver against pymodbus; `signing`: the device's signatures on
//! what it publishes; `store_forward`: a broker outage during a roast; `support`: what they
//! share.
#![allow(clippy::unwrap_used)] // In tests a panic is the assertion.

mod commands;
mod modbus;
mod signing;
mod store_forward;
mod support;

pub(crate) use support::*;
