//! Reading a plugin's Prometheus `/metrics` in tests: fetch the text over
//! plain HTTP/1.1, pick one sample's value, list the sample names.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free port for a plugin's `/metrics`, and the setting that serves it there.
#[derive(Debug)]
pub struct MetricsPort {
    /// The port, for [`scrape`] and [`wait_for_sample`].
    pub port: u16,
    setting: String,
}

impl MetricsPort {
    /// A port nothing listens on yet.
    pub fn free() -> MetricsPort {
        let port = crate::free_port();
        MetricsPort {
            port,
            setting: port.to_string(),
        }
    }

    /// `PRISM_METRICS_PORT=<port>`, for the plugin's environment.
    pub fn env(&self) -> (&'static str, &str) {
        ("PRISM_METRICS_PORT", &self.setting)
    }
}

/// The body of `GET /metrics` on 127.0.0.1:`port`.
pub async fn scrape(port: u16) -> String {
    try_scrape(port).await.expect("the metrics port answers")
}

/// [`scrape`], or None while nothing listens on `port` yet.
pub async fn try_scrape(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
    Some(body.to_string())
}

/// The value of the first sample named `name` whose labels include every
/// `labels` pair (`key="value"`).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|line| {
            let sample_name = line.split(['{', ' ']).next().unwrap_or_default();
            sample_name == name
                && labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Every sample name in `text` (`prism_grpc_requests_total`, `..._bucket`).
pub fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Scrapes `port` until `check` accepts a value of `name{labels}`; returns
/// it. Panics naming `what` with the last scrape after `timeout`.
pub async fn wait_for_sample(
    port: u16,
    name: &str,
    labels: &[(&str, &str)],
    what: &str,
    timeout: Duration,
    check: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(port).await;
        if let Some(value) = sample(&text, name, labels).filter(|v| check(*v)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {name}{labels:?} not as expected within {timeout:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
