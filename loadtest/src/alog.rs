//! Artisan roast logs (`.alog`): recorded roasts to replay as load.
//!
//! An `.alog` file is a Python dict literal (Artisan writes `repr(dict)`). It is read with
//! `py_literal`, a parser of Python *literals* only — no expression is ever evaluated, so a
//! crafted file can at worst be refused. The keys used:
//!
//! - `timex`: seconds since the recording started, one per sample;
//! - `temp1` (ET) and `temp2` (BT), one per sample, `-1` for a missing reading;
//! - `mode`: `'C'` or `'F'` (converted to °C, the contract's unit);
//! - `specialevents` (sample indices), `specialeventstype` (index into `etypes`, by default
//!   Air, Drum, Damper, Burner) and `specialeventsvalue` (`v` means `round(v*10)-10` percent):
//!   control changes, replayed as the `air`, `drum` and `gas` channels held between changes.

use std::path::{Path, PathBuf};

use py_literal::Value;

use crate::Error;

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

/// One roast, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RoastLog {
    /// The file name, for reports and session metadata.
    pub name: String,
    /// Samples with at least one temperature; samples where the probes read nothing (Artisan
    /// records those before the roast starts) are left out, since a point must carry a reading.
    pub samples: Vec<LogSample>,
}

/// Reads every `.alog` file at `path` (a file, or a directory: its `.alog` files, by name).
pub fn load(path: &Path) -> Result<Vec<RoastLog>, Error> {
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("alog"))
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    if files.is_empty() {
        return Err(Error::Config(format!(
            "{}: no .alog roast logs there",
            path.display()
        )));
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
                path: file.display().to_string(),
                source,
            })?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            parse(&name, &text).map_err(|e| Error::Config(format!("{}: {e}", file.display())))
        })
        .collect()
}

/// Parses the text of one `.alog` file.
pub fn parse(name: &str, text: &str) -> Result<RoastLog, String> {
    let value: Value = text
        .trim()
        .parse()
        .map_err(|e| format!("not a Python literal: {e}"))?;
    let Value::Dict(entries) = value else {
        return Err("not an Artisan roast log: the file is not a dict".into());
    };
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s == key))
            .map(|(_, v)| v)
    };
    let numbers = |key: &str| -> Result<Vec<f64>, String> {
        match get(key) {
            Some(Value::List(items) | Value::Tuple(items)) => items
                .iter()
                .map(|v| number(v).ok_or_else(|| format!("{key} holds a non-number")))
                .collect(),
            Some(_) => Err(format!("{key} is not a list")),
            None => Err(format!("no {key} in the log")),
        }
    };
    let timex = numbers("timex")?;
    let et = numbers("temp1")?;
    let bt = numbers("temp2")?;
    if et.len() != timex.len() || bt.len() != timex.len() {
        return Err(format!(
            "timex, temp1 and temp2 differ in length ({}, {}, {})",
            timex.len(),
            et.len(),
            bt.len()
        ));
    }
    let fahrenheit = matches!(get("mode"), Some(Value::String(m)) if m == "F");
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
        return Err("the log holds no temperature reading".into());
    }
    Ok(RoastLog {
        name: name.to_owned(),
        samples,
    })
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Float(f) => Some(*f),
        Value::Integer(i) => i.to_string().parse().ok(),
        _ => None,
    }
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
    let get = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, Value::String(s) if s == key))
            .and_then(|(_, v)| match v {
                Value::List(items) | Value::Tuple(items) => Some(items.as_slice()),
                _ => None,
            })
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
    }

    #[test]
    fn reads_a_real_artisan_log() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/roast_25-10-11_1319.alog");
        let logs = load(&path).unwrap();
        assert_eq!(logs.len(), 1);
        let log = &logs[0];
        assert_eq!(log.name, "roast_25-10-11_1319.alog");
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
        // A directory: its .alog files, by name (and nothing else there).
        let dir = load(path.parent().unwrap()).unwrap();
        assert_eq!(dir, logs);
    }

    #[test]
    fn refuses_what_is_not_a_roast_log() {
        assert!(parse("x", "__import__('os').system('true')").is_err());
        assert!(parse("x", "[1, 2]").is_err());
        assert!(parse("x", "{'timex': [1.0], 'temp1': [1.0]}").is_err());
        assert!(parse("x", "{'timex': [1.0], 'temp1': [1.0], 'temp2': [1.0, 2.0]}").is_err());
        assert!(parse("x", "{'timex': [1.0], 'temp1': [-1], 'temp2': [-1]}").is_err());
    }
}
