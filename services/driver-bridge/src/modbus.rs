//! `modbus-tcp`: a roaster's controller over Modbus TCP. Each sample polls the configured
//! registers — per register its function code (holding 3, input 4), data type (u16, i16, u32,
//! i32, f32), word order of 32-bit values, and a linear scale (`value = raw × scale + offset`),
//! as real roasters' register maps need — and a command writes the control's register (a
//! holding register, function 6 for one word, 16 for two). A lost connection is an
//! [`DriverError::Unreachable`]: the bridge reports it and reconnects until the roaster answers.

use std::net::SocketAddr;
use std::time::Duration;

use model::Channels;
use model::command::Control;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_modbus::client::{Context, Reader as _, Writer as _};
use tokio_modbus::prelude::*;

use crate::driver::{Driver, DriverError, Reading};

/// `modbus` of a `modbus-tcp` device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSettings {
    /// `host:port` of the controller (Modbus TCP's port is 502).
    pub address: String,
    #[serde(default = "default_unit")]
    pub unit_id: u8,
    /// Longest one request may take before the roaster counts as unreachable.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    pub registers: Vec<Register>,
}

fn default_unit() -> u8 {
    1
}

fn default_timeout() -> u64 {
    1000
}

/// One channel's register.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The telemetry channel (`bt`, `et`, `gas`, `air`, `drum`, or another channel name).
    pub channel: String,
    /// Register address (0-based, as on the wire).
    pub address: u16,
    /// 3: holding register (read/write), 4: input register (read only).
    #[serde(default = "default_function")]
    pub function: u8,
    #[serde(default)]
    pub data_type: DataType,
    /// Of 32-bit values: `big` (high word first, the Modbus convention) or `little`.
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
}

fn default_function() -> u8 {
    3
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    #[default]
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl DataType {
    fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    #[default]
    Big,
    Little,
}

impl ModbusSettings {
    pub fn validate(&self) -> Result<(), String> {
        self.address
            .parse::<SocketAddr>()
            .map_err(|e| format!("address {:?}: {e} (expected ip:port)", self.address))?;
        if !(10..=60_000).contains(&self.timeout_ms) {
            return Err("timeout_ms must be within 10..=60000".into());
        }
        if self.registers.is_empty() {
            return Err("registers: at least one (bt, et, …)".into());
        }
        let mut seen = std::collections::HashSet::new();
        for r in &self.registers {
            let valid_name = !r.channel.is_empty()
                && r.channel.len() <= 32
                && r.channel
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(format!(
                    "register {:?}: channel must be 1-32 characters of [a-z0-9_]",
                    r.channel
                ));
            }
            if !seen.insert(r.channel.as_str()) {
                return Err(format!("register {:?}: channel mapped twice", r.channel));
            }
            if r.function != 3 && r.function != 4 {
                return Err(format!(
                    "register {:?}: function must be 3 (holding) or 4 (input)",
                    r.channel
                ));
            }
            if !(r.scale.is_finite() && r.scale != 0.0 && r.offset.is_finite()) {
                return Err(format!(
                    "register {:?}: scale must be a non-zero number, offset a number",
                    r.channel
                ));
            }
            if Control::parse(&r.channel).is_some() && r.function != 3 {
                return Err(format!(
                    "register {:?}: a control must be a holding register (function 3) to be written",
                    r.channel
                ));
            }
        }
        Ok(())
    }
}

/// The value of `words` (as read) as `register` describes it.
pub fn decode(register: &Register, words: &[u16]) -> Option<f64> {
    let pair = || -> Option<u32> {
        let (hi, lo) = match register.word_order {
            WordOrder::Big => (*words.first()?, *words.get(1)?),
            WordOrder::Little => (*words.get(1)?, *words.first()?),
        };
        Some((u32::from(hi) << 16) | u32::from(lo))
    };
    let raw = match register.data_type {
        DataType::U16 => f64::from(*words.first()?),
        DataType::I16 => f64::from(*words.first()? as i16),
        DataType::U32 => f64::from(pair()?),
        DataType::I32 => f64::from(pair()? as i32),
        DataType::F32 => f64::from(f32::from_bits(pair()?)),
    };
    let value = raw * register.scale + register.offset;
    value.is_finite().then_some(value)
}

/// The words that make `register` read `value`; `None` when it does not fit the type.
pub fn encode(register: &Register, value: f64) -> Option<Vec<u16>> {
    let raw = (value - register.offset) / register.scale;
    let bits: u32 = match register.data_type {
        DataType::U16 => {
            let r = raw.round();
            return (0.0..=f64::from(u16::MAX))
                .contains(&r)
                .then(|| vec![r as u16]);
        }
        DataType::I16 => {
            let r = raw.round();
            return (f64::from(i16::MIN)..=f64::from(i16::MAX))
                .contains(&r)
                .then(|| vec![r as i16 as u16]);
        }
        DataType::U32 => {
            let r = raw.round();
            if !(0.0..=f64::from(u32::MAX)).contains(&r) {
                return None;
            }
            r as u32
        }
        DataType::I32 => {
            let r = raw.round();
            if !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&r) {
                return None;
            }
            r as i32 as u32
        }
        DataType::F32 => (raw as f32).to_bits(),
    };
    let (hi, lo) = ((bits >> 16) as u16, bits as u16);
    Some(match register.word_order {
        WordOrder::Big => vec![hi, lo],
        WordOrder::Little => vec![lo, hi],
    })
}

pub struct ModbusDriver {
    settings: ModbusSettings,
    addr: SocketAddr,
    ctx: Option<Context>,
}

impl ModbusDriver {
    pub fn new(settings: ModbusSettings) -> Result<Self, DriverError> {
        settings.validate().map_err(DriverError::Config)?;
        let addr = settings
            .address
            .parse()
            .map_err(|e| DriverError::Config(format!("address: {e}")))?;
        Ok(ModbusDriver {
            settings,
            addr,
            ctx: None,
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    fn context(&mut self) -> Result<&mut Context, DriverError> {
        self.ctx
            .as_mut()
            .ok_or_else(|| DriverError::Unreachable("not connected".into()))
    }

    /// Runs one request; a transport failure or timeout drops the connection, so that the
    /// next read reconnects.
    async fn call<T, F>(&mut self, what: &str, request: F) -> Result<T, DriverError>
    where
        F: AsyncFnOnce(&mut Context) -> tokio_modbus::Result<T>,
    {
        let timeout = self.timeout();
        let ctx = self.context()?;
        match tokio::time::timeout(timeout, request(ctx)).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(exception))) => Err(DriverError::Refused(format!(
                "{what}: exception {exception}"
            ))),
            Ok(Err(e)) => {
                self.ctx = None;
                Err(DriverError::Unreachable(format!("{what}: {e}")))
            }
            Err(_) => {
                self.ctx = None;
                Err(DriverError::Unreachable(format!(
                    "{what}: no answer within {timeout:?}"
                )))
            }
        }
    }
}

impl Driver for ModbusDriver {
    async fn connect(&mut self) -> Result<(), DriverError> {
        let slave = Slave(self.settings.unit_id);
        let connect = tokio_modbus::client::tcp::connect_slave(self.addr, slave);
        match tokio::time::timeout(self.timeout(), connect).await {
            Ok(Ok(ctx)) => {
                self.ctx = Some(ctx);
                Ok(())
            }
            Ok(Err(e)) => Err(DriverError::Unreachable(format!("{}: {e}", self.addr))),
            Err(_) => Err(DriverError::Unreachable(format!(
                "{}: no connection within {:?}",
                self.addr,
                self.timeout()
            ))),
        }
    }

    async fn read(&mut self) -> Result<Reading, DriverError> {
        let mut channels = Channels::default();
        for r in self.settings.registers.clone() {
            let (address, count) = (r.address, r.data_type.words());
            let words = if r.function == 4 {
                self.call(&r.channel, async move |ctx: &mut Context| {
                    ctx.read_input_registers(address, count).await
                })
                .await?
            } else {
                self.call(&r.channel, async move |ctx: &mut Context| {
                    ctx.read_holding_registers(address, count).await
                })
                .await?
            };
            let value = decode(&r, &words).ok_or_else(|| {
                DriverError::Refused(format!("{}: unreadable value {words:?}", r.channel))
            })?;
            match r.channel.as_str() {
                "bt" => channels.bt = Some(value),
                "et" => channels.et = Some(value),
                "gas" => channels.gas = Some(value),
                "air" => channels.air = Some(value),
                "drum" => channels.drum = Some(value),
                other => {
                    channels.extra.insert(other.to_owned(), value);
                }
            }
        }
        Ok(Reading::Sample(channels))
    }

    async fn apply(&mut self, control: Control, value: f64) -> Result<(), DriverError> {
        let register = self
            .settings
            .registers
            .iter()
            .find(|r| r.channel == control.as_str())
            .cloned()
            .ok_or_else(|| DriverError::Refused(format!("no register is mapped for {control}")))?;
        let words = encode(&register, value).ok_or_else(|| {
            DriverError::Refused(format!("{value} does not fit {control}'s register"))
        })?;
        if self.ctx.is_none() {
            self.connect().await?;
        }
        let address = register.address;
        let what = format!("writing {control}");
        if let [word] = words[..] {
            self.call(&what, async move |ctx: &mut Context| {
                ctx.write_single_register(address, word).await
            })
            .await
        } else {
            self.call(&what, async move |ctx: &mut Context| {
                ctx.write_multiple_registers(address, &words).await
            })
            .await
        }
    }

    async fn close(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            let _ = ctx.disconnect().await;
        }
    }

    fn session_start_metadata(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("driver".into(), "modbus-tcp".into());
        m
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reg(data_type: DataType, word_order: WordOrder, scale: f64) -> Register {
        Register {
            channel: "bt".into(),
            address: 0,
            function: 3,
            data_type,
            word_order,
            scale,
            offset: 0.0,
        }
    }

    #[test]
    fn every_type_and_word_order_round_trips() {
        let cases = [
            (reg(DataType::U16, WordOrder::Big, 0.1), 201.3),
            (reg(DataType::I16, WordOrder::Big, 0.1), -12.5),
            (reg(DataType::U32, WordOrder::Big, 0.01), 201.37),
            (reg(DataType::U32, WordOrder::Little, 0.01), 201.37),
            (reg(DataType::I32, WordOrder::Little, 1.0), -70_000.0),
            (reg(DataType::F32, WordOrder::Big, 1.0), 201.25),
            (reg(DataType::F32, WordOrder::Little, 1.0), 201.25),
        ];
        for (r, v) in cases {
            let words = encode(&r, v).unwrap();
            let back = decode(&r, &words).unwrap();
            assert!((back - v).abs() < 1e-6, "{r:?}: {v} -> {words:?} -> {back}");
        }
        // Word order is the order on the wire: big puts the high word first.
        let big = encode(&reg(DataType::U32, WordOrder::Big, 1.0), 65_537.0).unwrap();
        assert_eq!(big, [1, 1]);
        let little = encode(&reg(DataType::U32, WordOrder::Little, 1.0), 65_536.0).unwrap();
        assert_eq!(little, [0, 1]);
        assert_eq!(encode(&reg(DataType::U16, WordOrder::Big, 1.0), -1.0), None);
    }
}
