//! A real headless Chromium, driven over WebDriver (Debian's `chromedriver`), for tests of the
//! pages the platform serves: what the browser runs, draws and receives (Server-Sent Events
//! included), not what a mock of it would.
//!
//! Each [`Browser`] is a chromedriver of its own, on a port it chose itself, with one Chromium
//! session and a throwaway profile. Both are killed, helpers and all, when the `Browser` is
//! dropped, even by a failing test.
//!
//! ```no_run
//! # async fn roast_page_draws_the_curve(url: &str) -> Result<(), testkit::browser::BrowserError> {
//! use std::time::Duration;
//! use testkit::browser::{self, Browser};
//!
//! if !browser::available_or_skip("roast_page_draws_the_curve") {
//!     return Ok(());
//! }
//! let browser = Browser::start().await?;
//! browser.goto(url).await?;
//! browser
//!     .wait_until("document.querySelectorAll('path').length > 0", Duration::from_secs(5))
//!     .await?;
//! assert_eq!(browser.text("h1").await?, "Roast");
//! # Ok(())
//! # }
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::Instant;

/// How long chromedriver has to say which port it took and to answer there, and Chromium to
/// open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Browser::wait_until`] evaluates its condition.
const WAIT_POLL: Duration = Duration::from_millis(100);
/// How often the start polls chromedriver's output and its `/status`.
const START_POLL: Duration = Duration::from_millis(20);

/// What went wrong in the browser, or in reaching it.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    /// chromedriver or Chromium is not installed.
    #[error("{0}")]
    Missing(String),
    /// chromedriver did not come up, or would not open a Chromium session.
    #[error("could not start the browser: {reason}\n--- chromedriver's output ---\n{log}")]
    Start { reason: String, log: String },
    /// A WebDriver command failed (a script that threw, an element not found, …).
    #[error("{what} failed: {source}")]
    Command {
        what: String,
        #[source]
        source: CmdError,
    },
    /// chromedriver's own endpoints (its `/status`, the browser's log) failed.
    #[error("{what} failed: {source}")]
    Driver {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// A script's result is not of the type asked for.
    #[error("the result of `{js}` is not a {ty}: {source}; it was {value}")]
    Decode {
        js: String,
        ty: &'static str,
        value: Value,
        #[source]
        source: serde_json::Error,
    },
    /// [`Browser::wait_until`]'s condition did not become `true` in time.
    #[error(
        "timed out after {timeout:?} waiting until `{js}`; its last value: {last}\n\
         console errors: {console}"
    )]
    Timeout {
        js: String,
        timeout: Duration,
        /// The condition's last value (JSON), or what it threw.
        last: String,
        /// What the page logged as errors, or why that could not be read.
        console: String,
    },
    /// Writing a screenshot (or the browser's scratch files) failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A headless Chromium session, and the chromedriver it runs under.
#[derive(Debug)]
pub struct Browser {
    // Field order is drop order: the processes are killed before the directory they write
    // to (profile, scratch files, chromedriver's log) is removed.
    client: Client,
    /// The session id, for chromedriver's endpoints that fantoccini has no call for.
    session: String,
    http: reqwest::Client,
    /// Every console error read from the browser so far: chromedriver hands each out once.
    console: Mutex<Vec<String>>,
    driver: Driver,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a port of its choosing and opens a headless Chromium session
    /// (1280×900, a fresh profile). [`BrowserError::Missing`] if either is not installed.
    pub async fn start() -> Result<Browser, BrowserError> {
        let (Some(chromedriver), Some(chromium)) = (find("chromedriver"), find("chromium")) else {
            return Err(BrowserError::Missing(missing_message()));
        };
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| BrowserError::Io { what, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("testkit-browser-")
            .tempdir()
            .map_err(io("creating the browser's directory"))?;
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).map_err(io("creating chromedriver's log"))?;
        let err = out.try_clone().map_err(io("creating chromedriver's log"))?;
        let child = tokio::process::Command::new(&chromedriver)
            // Port 0: chromedriver binds a free port and says which, so no two tests race for one.
            .arg("--port=0")
            // Their scratch files too (chromedriver's, Chromium's shared memory without
            // /dev/shm) go where the drop removes them, even after a kill.
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // A process group of its own, so that Chromium and its helpers, which chromedriver
            // starts and would leave behind when killed, are killed with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(&format!("starting {}", chromedriver.display())))?;
        let mut driver = Driver {
            child,
            log,
            url: String::new(),
        };

        let deadline = Instant::now() + START_TIMEOUT;
        driver.wait_for_port(deadline).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| BrowserError::Driver {
                what: "building an HTTP client".to_owned(),
                source,
            })?;
        driver.wait_until_ready(&http, deadline).await?;

        let profile = dir.path().join("profile");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            // Console messages, uncaught exceptions and failed loads, for `console_errors`.
            "goog:loggingPrefs": { "browser": "ALL" },
            // Tests wait with their own deadlines; these only keep a hung page from hanging one.
            "timeouts": { "pageLoad": 30_000, "script": 30_000 },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let connect = tokio::time::timeout_at(
            deadline,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities)
                .connect(&driver.url),
        )
        .await;
        let client = match connect {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(driver.start_error(format!("no Chromium session: {e}"))),
            Err(_) => {
                return Err(driver.start_error(format!(
                    "Chromium did not open a session within {START_TIMEOUT:?}"
                )));
            }
        };
        let session = match client.session_id().await {
            Ok(Some(session)) => session,
            Ok(None) => return Err(driver.start_error("the session has no id".to_owned())),
            Err(e) => return Err(driver.start_error(format!("no session id: {e}"))),
        };
        Ok(Browser {
            client,
            session,
            http,
            console: Mutex::new(Vec::new()),
            driver,
            _dir: dir,
        })
    }

    /// Opens `url` and waits until it has loaded (its `load` event).
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.client
            .goto(url)
            .await
            .map_err(command(format!("opening {url}")))
    }

    /// Evaluates the JavaScript expression `js` in the page and returns its value, through
    /// JSON. A promise is awaited. For statements, wrap them: `(() => { …; return x; })()`.
    pub async fn eval<T: DeserializeOwned>(&self, js: &str) -> Result<T, BrowserError> {
        let value = self
            .execute(js)
            .await
            .map_err(command(format!("evaluating `{js}`")))?;
        serde_json::from_value(value.clone()).map_err(|source| BrowserError::Decode {
            js: js.to_owned(),
            ty: std::any::type_name::<T>(),
            value,
            source,
        })
    }

    /// Evaluates the JavaScript expression `js` every 100 ms until it is `true`. A condition
    /// that throws (say, on an element not there yet) counts as not yet. On timeout the error
    /// holds its last value and the page's console errors.
    pub async fn wait_until(&self, js: &str, timeout: Duration) -> Result<(), BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.execute(js).await {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(value) => value.to_string(),
                Err(CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::JavascriptError =>
                {
                    format!("it threw: {}", e.message)
                }
                Err(source) => {
                    return Err(BrowserError::Command {
                        what: format!("evaluating `{js}`"),
                        source,
                    });
                }
            };
            if Instant::now() >= deadline {
                let console = match self.console_errors().await {
                    Ok(errors) if errors.is_empty() => "none".to_owned(),
                    Ok(errors) => format!("\n  {}", errors.join("\n  ")),
                    Err(e) => format!("could not be read ({e})"),
                };
                return Err(BrowserError::Timeout {
                    js: js.to_owned(),
                    timeout,
                    last,
                    console,
                });
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// The text of the first element matching the CSS selector `css`, as rendered (what
    /// `innerText` gives: hidden text left out).
    pub async fn text(&self, css: &str) -> Result<String, BrowserError> {
        let what = || format!("reading the text of `{css}`");
        let element = self
            .client
            .find(Locator::Css(css))
            .await
            .map_err(command(what()))?;
        element.text().await.map_err(command(what()))
    }

    /// Saves what the window shows as a PNG at `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(command("taking a screenshot".to_owned()))?;
        tokio::fs::write(path, png)
            .await
            .map_err(|source| BrowserError::Io {
                what: format!("writing {}", path.display()),
                source,
            })
    }

    /// What the pages of this session (all of them, since the start) logged as errors: `console.error`, uncaught
    /// exceptions and rejections, resources that failed to load. Chromium's own wording, e.g.
    /// `http://127.0.0.1:8080/app.js 3:7 Uncaught TypeError: …`. Not the `/favicon.ico` that
    /// Chromium asks every server for on its own.
    pub async fn console_errors(&self) -> Result<Vec<String>, BrowserError> {
        #[derive(Deserialize)]
        struct Log {
            value: Vec<Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            level: String,
            message: String,
        }
        let what = || "reading the browser's log".to_owned();
        // Not in the W3C protocol, so not in fantoccini: chromedriver's extension, which
        // Selenium uses too.
        let log: Log = self
            .http
            .post(format!(
                "{}/session/{}/se/log",
                self.driver.url, self.session
            ))
            .json(&json!({ "type": "browser" }))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|source| BrowserError::Driver {
                what: what(),
                source,
            })?
            .json()
            .await
            .map_err(|source| BrowserError::Driver {
                what: what(),
                source,
            })?;
        let mut seen = self.console.lock().unwrap();
        seen.extend(
            log.value
                .into_iter()
                .filter(|e| e.level == "SEVERE" && !is_favicon_miss(&e.message))
                .map(|e| e.message),
        );
        Ok(seen.clone())
    }

    /// The WebDriver client itself, for what this API does not cover (clicks, forms, keys).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session (Chromium quits) and stops chromedriver. Dropping the `Browser` kills
    /// both instead.
    pub async fn close(self) -> Result<(), BrowserError> {
        let Browser {
            client, mut driver, ..
        } = self;
        let closed = client
            .close()
            .await
            .map_err(command("closing the session".to_owned()));
        driver.stop().await;
        closed
    }

    /// `js` as the body of a WebDriver script: its value returned, awaited if a promise.
    async fn execute(&self, js: &str) -> Result<Value, CmdError> {
        self.client.execute(&script(js), Vec::new()).await
    }
}

/// The body of a script that returns the value of the expression `js`. On lines of their own,
/// so that a trailing `// comment` comments nothing else out.
fn script(js: &str) -> String {
    let js = js.trim().trim_end_matches(';');
    format!("return (\n{js}\n);")
}

/// Whether a log message is Chromium's own request for `/favicon.ico` failing: no page asked.
fn is_favicon_miss(message: &str) -> bool {
    message
        .split_once(" - Failed to load resource")
        .is_some_and(|(url, _)| url.ends_with("/favicon.ico"))
}

/// `BrowserError::Command` for a failure of `what`.
fn command(what: String) -> impl FnOnce(CmdError) -> BrowserError {
    move |source| BrowserError::Command { what, source }
}

/// The chromedriver process, its group (Chromium and its helpers) and its output.
#[derive(Debug)]
struct Driver {
    child: Child,
    log: PathBuf,
    /// `http://127.0.0.1:<port>`, once chromedriver has said which port it took.
    url: String,
}

impl Driver {
    /// Waits until chromedriver says which port it took.
    async fn wait_for_port(&mut self, deadline: Instant) -> Result<(), BrowserError> {
        loop {
            if let Some(port) = started_port(&self.output()) {
                self.url = format!("http://127.0.0.1:{port}");
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("chromedriver exited ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "chromedriver did not say which port it took within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// Waits until chromedriver's `/status` says it is ready for a session.
    async fn wait_until_ready(
        &mut self,
        http: &reqwest::Client,
        deadline: Instant,
    ) -> Result<(), BrowserError> {
        #[derive(Deserialize)]
        struct Status {
            value: StatusValue,
        }
        #[derive(Deserialize)]
        struct StatusValue {
            ready: bool,
        }
        let status = format!("{}/status", self.url);
        loop {
            let last = match http.get(&status).send().await {
                Ok(resp) => match resp.json::<Status>().await {
                    Ok(s) if s.value.ready => return Ok(()),
                    Ok(_) => "not ready".to_owned(),
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.start_error(format!("chromedriver exited ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "{status} did not answer ready within {START_TIMEOUT:?}: {last}"
                )));
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    /// What chromedriver (and Chromium, through it) printed so far.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn start_error(&self, reason: String) -> BrowserError {
        BrowserError::Start {
            reason,
            log: self.output(),
        }
    }

    /// Kills the group and reaps chromedriver.
    async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            kill_group(pid);
        }
        let _ = self.child.wait().await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // No id once reaped: then the group is gone and its id may belong to someone else.
        if let Some(pid) = self.child.id() {
            kill_group(pid);
        }
    }
}

/// SIGKILL to every process in group `pgid`.
fn kill_group(pgid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Where `name` is: on the `PATH`, else in /usr/bin (where Debian puts it; `cargo xtask servers`
/// installs it there).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn missing_message() -> String {
    let missing: Vec<&str> = ["chromedriver", "chromium"]
        .into_iter()
        .filter(|p| find(p).is_none())
        .collect();
    format!(
        "{} not installed (looked on PATH and in /usr/bin); `cargo xtask servers` installs the \
         Debian packages chromium and chromium-driver",
        missing.join(" and ")
    )
}

/// Whether the browser tests can run here. When chromedriver or Chromium is missing: says so
/// loudly and returns `false` (the caller returns early), or panics under `CI=true` — the same
/// rule as for the servers ([`crate::require`]).
pub fn available_or_skip(test: &str) -> bool {
    if find("chromedriver").is_some() && find("chromium").is_some() {
        return true;
    }
    let msg = missing_message();
    if crate::ci() {
        panic!("CI=true: {msg}");
    }
    // Written to stderr directly: the test harness captures print!/eprint!, not this.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    false
}

/// The port in chromedriver's "ChromeDriver was started successfully on port 41234.". Only
/// up to the full stop: the file may be read while the number is half written.
fn started_port(output: &str) -> Option<u16> {
    output
        .lines()
        .find_map(|l| l.split_once("started successfully on port "))
        .and_then(|(_, rest)| rest.trim_end().strip_suffix('.')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_chromedriver_s_greeting() {
        let check = |output: &str, expected: Option<u16>| {
            assert_eq!(started_port(output), expected, "{output:?}");
        };
        check("", None);
        check("Starting ChromeDriver 156.0 on port 0\n", None);
        check(
            "Starting ChromeDriver 156.0 on port 0\nOnly local connections are allowed.\n\
             ChromeDriver was started successfully on port 35939.\n",
            Some(35939),
        );
        check("ChromeDriver was started successfully on port 35", None);
        check(
            "ChromeDriver was started successfully on port 35.\r\n",
            Some(35),
        );
    }

    #[test]
    fn only_the_browser_s_own_favicon_miss_is_left_out() {
        let check = |message: &str, expected: bool| {
            assert_eq!(is_favicon_miss(message), expected, "{message:?}");
        };
        check(
            "http://127.0.0.1:42405/favicon.ico - Failed to load resource: the server responded \
             with a status of 404 (Not Found)",
            true,
        );
        check(
            "http://127.0.0.1:42405/app.js - Failed to load resource: the server responded with \
             a status of 404 (Not Found)",
            false,
        );
        check("javascript 0:36 Uncaught Error: /favicon.ico", false);
    }

    #[test]
    fn an_expression_becomes_a_script_returning_it() {
        let check = |js: &str, expected: &str| assert_eq!(script(js), expected, "{js:?}");
        check("1 + 1", "return (\n1 + 1\n);");
        check("  document.title;  ", "return (\ndocument.title\n);");
        check("x // why", "return (\nx // why\n);");
    }
}
