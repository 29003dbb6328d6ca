//! Making reference profiles: from a stored session, from a sim-twin profile (simulated here by
//! the same engine sim-twin runs), from an Artisan `.alog`, or from a profile given as JSON.
//! Whatever the source, the profile passes `roast::Profile::validate` before it is stored, and a
//! refusal says why.

use kit::http::ApiError;
use roast::Profile;
use serde::{Deserialize, Serialize};
use store::{ErrorKind, ProfileInfo, StoredProfile};

use crate::roasts::{App, store_error};

/// `POST /profiles`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateProfile {
    /// Unique; what a session's start message may name (`"reference": "<name>"`).
    pub(crate) name: String,
    pub(crate) from: From,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum From {
    /// A stored (or live) session with a CHARGE event.
    Session {
        session: String,
        device_id: Option<String>,
    },
    /// A built-in sim-twin profile, roasted by the simulation engine.
    SimTwin {
        profile: String,
        batch_g: Option<f64>,
        seed: Option<u64>,
    },
    /// The curve itself.
    Profile(Profile),
}

/// A profile as the API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ProfileOut {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) source: String,
    pub(crate) origin: String,
    pub(crate) created_ms: i64,
    pub(crate) points: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) profile: Option<Profile>,
}

impl ProfileOut {
    pub(crate) fn of(info: ProfileInfo, profile: Option<Profile>) -> Self {
        ProfileOut {
            id: info.id,
            name: info.name,
            source: info.source,
            origin: info.origin,
            created_ms: info.created_ms,
            points: info.points,
            profile,
        }
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if model::valid_id(name) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid profile name {name:?}: expected 1-64 characters of [A-Za-z0-9._:-]"
        )))
    }
}

impl App {
    pub(crate) async fn create(&self, req: CreateProfile) -> Result<ProfileOut, ApiError> {
        check_name(&req.name)?;
        let (source, origin, profile) = match req.from {
            From::Session { session, device_id } => {
                let roast = self.roast(&session, device_id.as_deref()).await?;
                let profile =
                    Profile::from_session(&roast.readings, &roast.events()).map_err(|e| {
                        ApiError::BadRequest(format!("session {session:?} makes no profile: {e}"))
                    })?;
                (
                    "session",
                    format!("{}/{}", roast.device_id, session),
                    profile,
                )
            }
            From::SimTwin {
                profile,
                batch_g,
                seed,
            } => {
                let p = sim_twin(&profile, batch_g, seed)?;
                ("sim_twin", profile, p)
            }
            From::Profile(p) => {
                p.validate().map_err(bad)?;
                ("json", "request".to_owned(), p)
            }
        };
        self.put(&req.name, source, &origin, profile).await
    }

    /// `POST /profiles/alog?name=…`: an Artisan roast log, refused with the parser's reason.
    pub(crate) async fn import_alog(&self, name: &str, text: &str) -> Result<ProfileOut, ApiError> {
        check_name(name)?;
        let log =
            roast::alog::parse(name, text).map_err(|e| bad(format!("not a usable .alog: {e}")))?;
        let profile = Profile::from_alog(&log)
            .map_err(|e| bad(format!("the .alog makes no profile: {e}")))?;
        self.put(name, "alog", name, profile).await
    }

    pub(crate) async fn put(
        &self,
        name: &str,
        source: &str,
        origin: &str,
        profile: Profile,
    ) -> Result<ProfileOut, ApiError> {
        let info = ProfileInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            name: name.to_owned(),
            source: source.to_owned(),
            origin: origin.to_owned(),
            created_ms: model::now_ms(),
            points: i64::try_from(profile.points.len()).unwrap_or(i64::MAX),
        };
        let json = serde_json::to_string(&profile).map_err(ApiError::internal)?;
        let stored = StoredProfile {
            info: info.clone(),
            profile: json,
        };
        match self.store.create_profile(&stored).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {
                return Err(ApiError::Conflict(format!(
                    "a profile named {name:?} exists already"
                )));
            }
            Err(e) => return Err(store_error(e)),
        }
        crate::metrics::profile_created(source);
        Ok(ProfileOut::of(info, Some(profile)))
    }

    /// Stores a reference for each built-in sim-twin profile that has none yet (named
    /// `sim-twin:<profile>`), so that simulated roasters, which name one in their start
    /// message, are compared with something on a fresh install.
    pub(crate) async fn seed_sim_twin(&self) -> Result<usize, ApiError> {
        let mut created = 0;
        for p in sim_engine::builtin_profiles() {
            let name = format!("sim-twin:{}", p.name);
            if self
                .store
                .profile(&name)
                .await
                .map_err(store_error)?
                .is_some()
            {
                continue;
            }
            let profile = sim_twin(&p.name, None, None)?;
            match self.put(&name, "sim_twin", &p.name, profile).await {
                Ok(_) => created += 1,
                // Another replica seeded it first.
                Err(ApiError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}

/// The roast a sim-twin profile gives (seed 0 and the engine's default batch unless given),
/// with the engine's own events.
fn sim_twin(name: &str, batch_g: Option<f64>, seed: Option<u64>) -> Result<Profile, ApiError> {
    let profile = sim_engine::builtin_profile(name).ok_or_else(|| {
        let known: Vec<String> = sim_engine::builtin_profiles()
            .into_iter()
            .map(|p| p.name)
            .collect();
        ApiError::BadRequest(format!(
            "no sim-twin profile {name:?} (there are: {})",
            known.join(", ")
        ))
    })?;
    let mut config = sim_engine::RoastConfig {
        profile,
        ..Default::default()
    };
    if let Some(b) = batch_g {
        config.batch_g = b;
    }
    if let Some(s) = seed {
        config.seed = s;
    }
    let roast = sim_engine::simulate(&config).map_err(bad)?;
    let readings: Vec<roast::Reading> = roast
        .samples
        .iter()
        .map(|s| roast::Reading {
            ts_ms: i64::try_from(s.t_ms).unwrap_or(i64::MAX),
            bt: Some(s.bt),
            et: Some(s.et),
        })
        .collect();
    let events: Vec<(roast::EventKind, i64)> = roast
        .events
        .iter()
        .map(|e| (e.kind.into(), i64::try_from(e.t_ms).unwrap_or(i64::MAX)))
        .collect();
    Profile::from_session(&readings, &events).map_err(bad)
}
