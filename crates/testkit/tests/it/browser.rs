//! The headless browser draws what a page is pushed over Server-Sent Events, and says what went
//! wrong when a page does not do what a test waits for.

use std::convert::Infallible;
use std::io::Write as _;
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use testkit::browser::{self, Browser, BrowserError};

/// A live roast curve in miniature: each event from `/events` adds a point to the SVG path and
/// shows the latest reading.
const PAGE: &str = r##"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Live roast</title>
<style>
  body { font-family: sans-serif; margin: 24px; background: #fffaf3; color: #3b2416; }
  svg { background: #fff; border: 1px solid #d8c3a5; }
</style>
</head>
<body>
<h1>Live roast</h1>
<p id="last">waiting for the roaster…</p>
<svg width="1000" height="500" viewBox="0 0 1000 500">
  <path id="curve" d="M0,500" fill="none" stroke="#b5461c" stroke-width="4"/>
</svg>
<script>
  const curve = document.getElementById('curve');
  const last = document.getElementById('last');
  new EventSource('/events').onmessage = (e) => {
    const p = JSON.parse(e.data);
    curve.setAttribute('d', `${curve.getAttribute('d')} L${p.seq * 10},${500 - p.bt * 2}`);
    last.textContent = `#${p.seq} BT ${p.bt.toFixed(1)} °C`;
  };
</script>
</body>
</html>
"##;

/// How many points the page's curve has.
const POINTS: &str = "document.getElementById('curve').getAttribute('d').split(' L').length - 1";

/// The bean temperature of reading `seq`: a roast's rise, to one decimal as a probe reports.
fn bt(seq: u64) -> f64 {
    let t = 200.0 - 180.0 * (-(seq as f64) / 40.0).exp();
    (t * 10.0).round() / 10.0
}

/// One reading every 50 ms, for as long as the page listens.
fn readings() -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(1_u64, |seq| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let data = serde_json::json!({ "seq": seq, "bt": bt(seq) }).to_string();
        Some((Ok(Event::default().data(data)), seq + 1))
    })
}

/// Serves [`PAGE`] and its events on a free port; returns the page's URL.
async fn serve_page() -> String {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/events",
            get(|| async { Sse::new(readings()).keep_alive(KeepAlive::default()) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// The PNG's width and height (from its IHDR chunk), or `None` if it is no PNG.
fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    let header = png.strip_prefix(b"\x89PNG\r\n\x1a\n")?;
    if header.get(4..8)? != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    Some((be(header.get(8..12)?), be(header.get(12..16)?)))
}

#[tokio::test]
async fn a_curve_pushed_over_sse_grows_in_the_browser() {
    if !browser::available_or_skip("a_curve_pushed_over_sse_grows_in_the_browser") {
        return;
    }
    let started = Instant::now();
    let url = serve_page().await;
    let browser = Browser::start().await.unwrap();
    let session_up = started.elapsed();
    let dir = tempfile::tempdir().unwrap();

    // A blank page first: what a screenshot of nothing weighs.
    browser.goto("about:blank").await.unwrap();
    let blank = dir.path().join("blank.png");
    browser.screenshot(&blank).await.unwrap();
    let blank = std::fs::read(blank).unwrap();

    browser.goto(&url).await.unwrap();
    browser
        .wait_until(&format!("{POINTS} >= 3"), Duration::from_secs(10))
        .await
        .unwrap();
    let first: u64 = browser.eval(POINTS).await.unwrap();
    browser
        .wait_until(
            &format!("{POINTS} >= {}", first + 10),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // The latest reading, as the page shows it: the one the server sent under that number.
    let last = browser.text("#last").await.unwrap();
    let seq: u64 = last
        .strip_prefix('#')
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a reading: {last:?}"));
    assert!(seq >= first + 10, "{last:?} after {first} points");
    assert_eq!(last, format!("#{seq} BT {:.1} °C", bt(seq)));
    assert_eq!(browser.text("h1").await.unwrap(), "Live roast");
    assert_eq!(
        browser.console_errors().await.unwrap(),
        Vec::<String>::new()
    );

    let shot = dir.path().join("roast.png");
    browser.screenshot(&shot).await.unwrap();
    let png = std::fs::read(&shot).unwrap();
    let (width, height) = png_size(&png).unwrap_or_else(|| panic!("not a PNG: {shot:?}"));
    assert!(
        width >= 1000 && height >= 500,
        "{width}×{height}: the page is wider"
    );
    assert!(
        png.len() > 2 * blank.len(),
        "the screenshot ({} bytes) is hardly more than a blank page's ({} bytes)",
        png.len(),
        blank.len()
    );
    if let Some(keep) = std::env::var_os("SIMCORP_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }

    browser.close().await.unwrap();
    // Straight to stderr, past the harness: how long a browser test takes.
    let _ = writeln!(
        std::io::stderr(),
        "browser: session up in {session_up:?}, test done in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn failures_say_what_the_page_did() {
    if !browser::available_or_skip("failures_say_what_the_page_did") {
        return;
    }
    let browser = Browser::start().await.unwrap();
    browser
        .goto("data:text/html,<title>t</title><script>console.error('boom at load')</script>")
        .await
        .unwrap();

    let timed_out = browser
        .wait_until("document.title === 'never'", Duration::from_millis(300))
        .await;
    match timed_out {
        Err(BrowserError::Timeout { last, console, .. }) => {
            assert_eq!(last, "false");
            assert!(console.contains("boom at load"), "{console}");
        }
        other => panic!("{other:?}"),
    }

    // A condition that throws is "not yet", and what it threw is the last value.
    let threw = browser
        .wait_until("document.querySelector('#missing').hidden", Duration::ZERO)
        .await;
    match threw {
        Err(BrowserError::Timeout { last, .. }) => {
            assert!(last.starts_with("it threw: "), "{last}");
        }
        other => panic!("{other:?}"),
    }

    // A promise is awaited.
    assert_eq!(
        browser
            .eval::<u32>("new Promise((ok) => setTimeout(() => ok(7), 10))")
            .await
            .unwrap(),
        7
    );
    let wrong_type = browser.eval::<u32>("document.title").await;
    assert!(
        matches!(&wrong_type, Err(BrowserError::Decode { value, .. }) if value == "t"),
        "{wrong_type:?}"
    );
    assert!(matches!(
        browser.text("#missing").await,
        Err(BrowserError::Command { .. })
    ));
}
