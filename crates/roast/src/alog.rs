//! Artisan roast logs (`.alog`): recorded roasts, with the roaster's own event marks.
//!
//! An `.alog` file is a Python dict literal (Artisan writes `repr(dict)`). It is read with
//! `py_literal`, a parser of Python *literals* only — no expression is ever evaluated, so a
//! crafted file can at worst be refused. The keys used:
//!
//! - `timex`: seconds since the recording started, one per sample;
//! - `temp1` (ET) and `temp2` (BT), one per sample, `-1` for a missing reading;
//! - `mode`: `'C'` or `'F'` (converted to °C, the contract's unit);
//! - `timeindex`: indices into `timex` of the roaster's marks `[CHARGE, DRY, FCs, FCe, SCs, SCe,
//!   DROP, COOL]` (CHARGE `-1` and the others `0` when unset); `computed.TP_time`: Artisan's
//!   turning point, seconds after CHARGE;
//! - `weight`: `[green, roasted, unit]`;
//! - `specialevents` (sample indices), `specialeventstype` (index into `etypes`, by default
//!   Air, Drum, Damper, Burner) and `specialeventsvalue` (`v` means `round(v*10)-10` percent):
//!   control changes, read as the `air`, `drum` and `gas` channels held between changes.

use py_literal::Value;

use crate::EventKind;

/// The largest log accepted: Artisan's own files are tens of kilobytes; a day of 1 Hz
/// recording is under 10 MB.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// The most samples accepted (a day at 1 Hz).
pub const MAX_SAMPLES: usize = 86_400;

/// Why a text is not a roast log this reader accepts; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AlogError(String);

fn refuse<T>(message: impl Into<String>) -> Result<T, AlogError> {
    Err(AlogError(message.into()))
}

/// One recorded sample, in °C and % of range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogSample {
    /// Seconds since the recording started.
    pub t_s: f64,
    pub bt: Option<f64>,
    pub et: Option<f64>,
    pub gas: Option<f64>,
    pub air: Option<f64>,
    pub drum: Option<f64>,
}

/// An event the roaster marked, seconds since the recording started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mark {
    pub kind: EventKind,
    pub t_s: f64,
}

/// One roast, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RoastLog {
    /// The file name, for reports and session metadata.
    pub name: String,
    /// Samples with at least one temperature; samples where the probes read nothing (Artisan
    /// records those before the roast starts) are left out, since a point must carry a reading.
    pub samples: Vec<LogSample>,
    /// The roaster's marks, in time order (TP from Artisan's own computation).
    pub marks: Vec<Mark>,
    /// Green and roasted weight, grams, where the log gives them.
    pub weight_in_g: Option<f64>,
    pub weight_out_g: Option<f64>,
}

impl RoastLog {
    /// When the roaster marked `kind`, seconds since the recording started.
    pub fn mark(&self, kind: EventKind) -> Option<f64> {
        self.marks.iter().find(|m| m.kind == kind).map(|m| m.t_s)
    }
}

/// Parses the text of one `.alog` file.
pub fn parse(name: &str, text: &str) -> Result<RoastLog, AlogError> {
    if text.len() > MAX_BYTES {
        return refuse(format!(
            "the log is {} bytes, more than the {MAX_BYTES} accepted",
            text.len()
        ));
    }
    let value: Value = match text.trim().parse() {
        Ok(value) => value,
        Err(e) => return refuse(format!("not a Python literal (truncated?): {e}")),
    };
    let Value::Dict(entries) = value else {
        return refuse("not an Artisan roast log: the file is not a dict");
    };
    let get = |key: &str| field(&entries, key);
    let numbers = |key: &str| -> Result<Vec<f64>, AlogError> {
        match get(key) {
            Some(Value::List(items) | Value::Tuple(items)) => {
                if items.len() > MAX_SAMPLES {
                    return refuse(format!(
                        "{key} holds {} samples, more than the {MAX_SAMPLES} accepted",
                        items.len()
                    ));
                }
                items
                    .iter()
                    .map(|v| {
                        number(v).ok_or_else(|| AlogError(format!("{key} holds a non-number")))
                    })
                    .collect()
            }
            Some(_) => refuse(format!("{key} is not a list")),
            None => refuse(format!("no {key} in the log")),
        }
    };
    let timex = numbers("timex")?;
    let et = numbers("temp1")?;
    let bt = numbers("temp2")?;
    if et.len() != timex.len() || bt.len() != timex.len() {
        return refuse(format!(
            "timex, temp1 and temp2 differ in length ({}, {}, {})",
            timex.len(),
            et.len(),
            bt.len()
        ));
    }
    if let Some(i) = (0..timex.len())
        .find(|&i| !timex[i].is_finite() || timex[i] < 0.0 || (i > 0 && timex[i] <= timex[i - 1]))
    {
        return refuse(format!(
            "timex must be finite, non-negative seconds that increase; sample {i} is {}",
            timex[i]
        ));
    }
    let fahrenheit = match get("mode") {
        None => false,
        Some(Value::String(m)) if m == "C" => false,
        Some(Value::String(m)) if m == "F" => true,
        Some(other) => return refuse(format!("mode must be 'C' or 'F', not {other}")),
    };
    let celsius = |v: f64| {
        // -1 is Artisan's "no reading"; anything else non-finite or absurd is dropped too.
        if v == -1.0 || !v.is_finite() {
            return None;
        }
        let c = if fahrenheit {
            (v - 32.0) * 5.0 / 9.0
        } else {
            v
        };
        (-50.0..=1000.0)
            .contains(&c)
            .then(|| (c * 100.0).round() / 100.0)
    };
    let controls = controls(&entries, timex.len());
    let marks = marks(&entries, &timex);
    let (weight_in_g, weight_out_g) = weights(get("weight"));

    let samples: Vec<LogSample> = (0..timex.len())
        .map(|i| LogSample {
            t_s: timex[i],
            bt: celsius(bt[i]),
            et: celsius(et[i]),
            gas: controls.gas[i],
            air: controls.air[i],
            drum: controls.drum[i],
        })
        .filter(|s| s.bt.is_some() || s.et.is_some())
        .collect();
    if samples.is_empty() {
        return refuse("the log holds no temperature reading");
    }
    Ok(RoastLog {
        name: name.to_owned(),
        samples,
        marks,
        weight_in_g,
        weight_out_g,
    })
}

/// The value of a dict's string key.
fn field<'a>(entries: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|(k, _)| matches!(k, Value::String(s) if s == key))
        .map(|(_, v)| v)
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => i.to_string().parse().ok(),
        _ => None,
    }
}

/// The roaster's marks: `timeindex` (CHARGE `-1` and the others `0` when unset) and Artisan's
/// computed turning point. A mark that points outside the samples is ignored.
fn marks(entries: &[(Value, Value)], timex: &[f64]) -> Vec<Mark> {
    let get = |key: &str| field(entries, key);
    let slots = [
        Some(EventKind::Charge),
        Some(EventKind::DryEnd),
        Some(EventKind::FcStart),
        Some(EventKind::FcEnd),
        None, // second crack start
        None, // second crack end
        Some(EventKind::Drop),
        None, // cool
    ];
    let mut out = Vec::new();
    if let Some(Value::List(items) | Value::Tuple(items)) = get("timeindex") {
        for (slot, item) in slots.iter().zip(items) {
            let (Some(kind), Some(i)) = (slot, number(item)) else {
                continue;
            };
            let unset = if *kind == EventKind::Charge {
                i < 0.0
            } else {
                i <= 0.0
            };
            if unset || i.fract() != 0.0 {
                continue;
            }
            if let Some(&t_s) = timex.get(i as usize) {
                out.push(Mark { kind: *kind, t_s });
            }
        }
    }
    let charge = out
        .iter()
        .find(|m| m.kind == EventKind::Charge)
        .map(|m| m.t_s);
    let tp = match get("computed") {
        Some(Value::Dict(computed)) => field(computed, "TP_time").and_then(number),
        _ => None,
    };
    if let (Some(charge), Some(tp)) = (charge, tp)
        && tp.is_finite()
        && tp > 0.0
    {
        out.push(Mark {
            kind: EventKind::TurningPoint,
            t_s: charge + tp,
        });
    }
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    out
}

/// `weight: [green, roasted, unit]`, in grams; a zero means "not weighed".
fn weights(weight: Option<&Value>) -> (Option<f64>, Option<f64>) {
    let Some(Value::List(items) | Value::Tuple(items)) = weight else {
        return (None, None);
    };
    let grams = match items.get(2) {
        Some(Value::String(unit)) if unit == "Kg" || unit == "kg" => 1000.0,
        Some(Value::String(unit)) if unit == "lb" => 453.592,
        Some(Value::String(unit)) if unit == "oz" => 28.3495,
        _ => 1.0,
    };
    let at = |i: usize| {
        items
            .get(i)
            .and_then(number)
            .filter(|w| w.is_finite() && *w > 0.0)
            .map(|w| w * grams)
    };
    (at(0), at(1))
}

/// Control settings per sample, held from each recorded change to the next.
struct Controls {
    gas: Vec<Option<f64>>,
    air: Vec<Option<f64>>,
    drum: Vec<Option<f64>>,
}

fn controls(entries: &[(Value, Value)], len: usize) -> Controls {
    let mut out = Controls {
        gas: vec![None; len],
        air: vec![None; len],
        drum: vec![None; len],
    };
    let get = |key: &str| match field(entries, key) {
        Some(Value::List(items) | Value::Tuple(items)) => Some(items.as_slice()),
        _ => None,
    };
    let (Some(at), Some(kinds), Some(values)) = (
        get("specialevents"),
        get("specialeventstype"),
        get("specialeventsvalue"),
    ) else {
        return out;
    };
    // Artisan's default event types; a log may rename them (etypes), and is then read by name.
    let names: Vec<String> = get("etypes")
        .map(|t| {
            t.iter()
                .map(|v| match v {
                    Value::String(s) => s.to_ascii_lowercase(),
                    _ => String::new(),
                })
                .collect()
        })
        .unwrap_or_else(|| {
            ["air", "drum", "damper", "burner"]
                .map(String::from)
                .to_vec()
        });
    let mut changes: Vec<(usize, usize, f64)> = at
        .iter()
        .zip(kinds)
        .zip(values)
        .filter_map(|((i, k), v)| {
            let i = usize::try_from(number(i)? as i64).ok()?;
            let k = usize::try_from(number(k)? as i64).ok()?;
            // Artisan stores a percentage p as (p + 10) / 10.
            let percent = ((number(v)? * 10.0).round() - 10.0).clamp(0.0, 100.0);
            (i < len).then_some((i, k, percent))
        })
        .collect();
    changes.sort_by_key(|&(i, _, _)| i);
    for (i, kind, percent) in changes {
        let channel = match names.get(kind).map(String::as_str) {
            Some("burner" | "gas" | "heater" | "power") => &mut out.gas,
            Some("air" | "fan") => &mut out.air,
            Some("drum") => &mut out.drum,
            _ => continue,
        };
        for slot in &mut channel[i..] {
            *slot = Some(percent);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real(name: &str) -> RoastLog {
        let path = format!(
            "{}/../../testdata/roast-logs/skywalker/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        parse(name, &text).unwrap()
    }

    #[test]
    fn reads_a_minimal_log() {
        let text = "{'mode': 'F', 'timex': [0.5, 2.5, 4.5, 6.5], \
                    'temp1': [-1, 400.0, 410.0, -1], 'temp2': [-1.0, 212, 230.0, -1], \
                    'etypes': ['Air', 'Drum', 'Damper', 'Burner', '--'], \
                    'specialevents': [2, 1], 'specialeventstype': [3, 0], \
                    'specialeventsvalue': [7.0, 4.5], 'title': 'x\\ny', 'flag': True, 'n': None}";
        let log = parse("mini.alog", text).unwrap();
        // Sample 0 and 3 read nothing: left out.
        assert_eq!(log.samples.len(), 2);
        let s = log.samples[0];
        assert_eq!(s.t_s, 2.5);
        assert_eq!(s.bt, Some(100.0));
        assert_eq!(s.et, Some(204.44));
        assert_eq!((s.air, s.gas, s.drum), (Some(35.0), None, None));
        assert_eq!(log.samples[1].gas, Some(60.0));
        assert_eq!(log.samples[1].air, Some(35.0));
        assert!(log.marks.is_empty());
    }

    #[test]
    fn reads_a_real_artisan_log_with_its_marks() {
        let log = real("roast_25-10-11_1319.alog");
        assert_eq!(log.samples.len(), 336);
        let first = log.samples[0];
        assert!((first.t_s - 1.255).abs() < 1e-3);
        assert_eq!((first.bt, first.et), (Some(129.54), Some(145.75)));
        assert_eq!((first.gas, first.air), (None, None), "no control set yet");
        // Sample 16 sets air 60 % and burner 70 % (stored as 7.0 and 8.0).
        assert_eq!(
            (log.samples[16].air, log.samples[16].gas),
            (Some(60.0), Some(70.0))
        );
        assert_eq!(log.samples[28].gas, Some(65.0));
        // At the drop: burner off, air full.
        let last = log.samples[335];
        assert_eq!((last.gas, last.air), (Some(0.0), Some(100.0)));
        let peak = log.samples.iter().filter_map(|s| s.bt).fold(0.0, f64::max);
        assert_eq!(peak, 190.31);

        // timeindex [13, 158, 208, 247, 266, 0, 273, 0]; TP 52 s after CHARGE.
        let kinds: Vec<EventKind> = log.marks.iter().map(|m| m.kind).collect();
        use EventKind::*;
        assert_eq!(kinds, [Charge, TurningPoint, DryEnd, FcStart, FcEnd, Drop]);
        let charge = log.mark(Charge).unwrap();
        assert!((log.mark(TurningPoint).unwrap() - charge - 52.0).abs() < 1e-9);
        assert!((log.mark(FcStart).unwrap() - charge - 390.0).abs() < 0.01);
        assert_eq!(log.weight_in_g, Some(150.0));
    }

    #[test]
    fn refuses_what_is_not_a_roast_log_with_a_reason() {
        let cases = [
            ("__import__('os').system('true')", "not a Python literal"),
            ("[1, 2]", "not a dict"),
            ("{'timex': [1.0, 2.0", "truncated"),
            ("{'timex': [1.0], 'temp1': [1.0]}", "no temp2"),
            (
                "{'timex': [1.0], 'temp1': [1.0], 'temp2': [1.0, 2.0]}",
                "differ in length",
            ),
            (
                "{'timex': [1.0], 'temp1': [-1], 'temp2': [-1]}",
                "no temperature reading",
            ),
            (
                "{'timex': [2.0, 1.0], 'temp1': [1, 1], 'temp2': [1, 1]}",
                "increase",
            ),
            (
                "{'mode': 'K', 'timex': [1.0], 'temp1': [1], 'temp2': [1]}",
                "mode must be",
            ),
            ("{'timex': ['a'], 'temp1': [1], 'temp2': [1]}", "non-number"),
        ];
        for (text, reason) in cases {
            let err = parse("x", text).unwrap_err().to_string();
            assert!(
                err.contains(reason),
                "{text:?}: {err:?} should say {reason:?}"
            );
        }
        let huge = format!("{{'timex': [{}]}}", "1.0, ".repeat(MAX_BYTES / 5));
        assert!(parse("x", &huge).unwrap_err().to_string().contains("bytes"));
    }

    #[test]
    fn missing_and_non_finite_readings_are_gaps() {
        let text =
            "{'timex': [0.0, 1.0, 2.0], 'temp1': [-1, -1, -1], 'temp2': [100.0, 1e999, 101.0]}";
        let log = parse("x", text).unwrap();
        let bts: Vec<Option<f64>> = log.samples.iter().map(|s| s.bt).collect();
        assert_eq!(bts, [Some(100.0), Some(101.0)]);
    }
}
