//! The operator's configuration file (`--config`, written by the chart's ConfigMap; see
//! `charts/ryzanstein/README.md`, "Operator contract") and the duration syntax of the
//! leader-election flags.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::LocalObjectReference;
use serde::Deserialize;

use crate::error::{Error, Result};

/// `operator.yaml`. Unknown keys are refused, so a typo in the chart or a hand-written file is
/// an error at start rather than a setting that silently does nothing.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Image of the server pods of a ModelDeployment whose `spec.image` is empty.
    pub default_server_image: String,
    /// Pull policy of server pods: `Always`, `IfNotPresent` or `Never`.
    #[serde(default = "default_pull_policy")]
    pub server_image_pull_policy: String,
    /// Pull secrets put on server pods.
    #[serde(default)]
    pub server_image_pull_secrets: Vec<LocalObjectReference>,
    /// How the autoscaler reads server pods' `/metrics`.
    #[serde(default)]
    pub autoscaler: AutoscalerConfig,
}

/// `autoscaler:` in `operator.yaml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalerConfig {
    /// How often each autoscaled ModelDeployment's ready pods are scraped.
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval_seconds: u64,
    /// Timeout of one pod's scrape.
    #[serde(default = "default_scrape_timeout")]
    pub scrape_timeout_seconds: u64,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            scrape_interval_seconds: default_scrape_interval(),
            scrape_timeout_seconds: default_scrape_timeout(),
        }
    }
}

impl AutoscalerConfig {
    /// The scrape interval as a [`Duration`].
    pub fn scrape_interval(&self) -> Duration {
        Duration::from_secs(self.scrape_interval_seconds)
    }

    /// The per-pod scrape timeout as a [`Duration`].
    pub fn scrape_timeout(&self) -> Duration {
        Duration::from_secs(self.scrape_timeout_seconds)
    }
}

fn default_pull_policy() -> String {
    "IfNotPresent".into()
}

fn default_scrape_interval() -> u64 {
    15
}

fn default_scrape_timeout() -> u64 {
    5
}

impl OperatorConfig {
    /// What the render functions need from this configuration (server image, pull policy and
    /// secrets; the other settings keep their defaults).
    pub fn render_options(&self) -> crate::render::RenderOptions {
        crate::render::RenderOptions {
            default_image: self.default_server_image.clone(),
            image_pull_policy: Some(self.server_image_pull_policy.clone()),
            image_pull_secrets: self
                .server_image_pull_secrets
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            ..crate::render::RenderOptions::default()
        }
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            action: "could not read the operator configuration",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text)
            .map_err(|e| Error::Config(format!("{}: {}", path.display(), config_reason(&e))))
    }

    /// Parses and checks `operator.yaml` text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = serde_saphyr::from_str(text)
            .map_err(|e| Error::Config(format!("operator.yaml does not parse: {e}")))?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.default_server_image.trim().is_empty() {
            return Err(Error::Config(
                "defaultServerImage is empty; set it to the server image (e.g. ryzanstein/server:0.1.0)"
                    .into(),
            ));
        }
        if !matches!(
            self.server_image_pull_policy.as_str(),
            "Always" | "IfNotPresent" | "Never"
        ) {
            return Err(Error::Config(format!(
                "serverImagePullPolicy is {:?}; use Always, IfNotPresent or Never",
                self.server_image_pull_policy
            )));
        }
        if let Some(secret) = self
            .server_image_pull_secrets
            .iter()
            .find(|s| s.name.is_empty())
        {
            return Err(Error::Config(format!(
                "serverImagePullSecrets has an entry without a name ({secret:?}); write [{{name: my-secret}}]"
            )));
        }
        let a = &self.autoscaler;
        if a.scrape_interval_seconds == 0 || a.scrape_timeout_seconds == 0 {
            return Err(Error::Config(
                "autoscaler.scrapeIntervalSeconds and scrapeTimeoutSeconds must be at least 1"
                    .into(),
            ));
        }
        if a.scrape_timeout_seconds > a.scrape_interval_seconds {
            return Err(Error::Config(format!(
                "autoscaler.scrapeTimeoutSeconds ({}) exceeds scrapeIntervalSeconds ({}); a scrape must end before the next begins",
                a.scrape_timeout_seconds, a.scrape_interval_seconds
            )));
        }
        Ok(())
    }
}

fn config_reason(e: &Error) -> String {
    match e {
        Error::Config(reason) => reason.clone(),
        other => other.to_string(),
    }
}

/// Parses a duration as Go's `time.ParseDuration` writes the common cases: one or more
/// `<number><unit>` parts with units `ms`, `s`, `m`, `h` (`15s`, `1m30s`, `500ms`, `1.5s`).
/// A bare number is refused: the unit is what makes `15` mean seconds rather than something else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration; write e.g. 15s, 500ms or 1m30s".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration; write e.g. 15s, 500ms or 1m30s"))?;
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(format!(
                    "{text:?} has no unit; write e.g. {number}s (units: ms, s, m, h)"
                ))
            }
            other => {
                return Err(format!(
                    "{text:?} has unknown unit {other:?}; use ms, s, m or h"
                ))
            }
        };
        total += value * seconds_per_unit;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `helm template` writes with the chart's default values.
    const CHART_DEFAULT: &str = r#"
# Image of the server pods of a ModelDeployment whose spec.image is empty.
defaultServerImage: "ryzanstein/server:0.1.0"
serverImagePullPolicy: IfNotPresent
serverImagePullSecrets: []
autoscaler:
  scrapeIntervalSeconds: 15
  scrapeTimeoutSeconds: 5
"#;

    #[test]
    fn reads_the_file_the_chart_writes() {
        let c = OperatorConfig::parse(CHART_DEFAULT).unwrap();
        assert_eq!(c.default_server_image, "ryzanstein/server:0.1.0");
        assert_eq!(c.server_image_pull_policy, "IfNotPresent");
        assert!(c.server_image_pull_secrets.is_empty());
        assert_eq!(c.autoscaler.scrape_interval(), Duration::from_secs(15));
        assert_eq!(c.autoscaler.scrape_timeout(), Duration::from_secs(5));
    }

    #[test]
    fn reads_pull_secrets_and_defaults_the_rest() {
        let c = OperatorConfig::parse(
            "defaultServerImage: r.example.com/s@sha256:00\nserverImagePullSecrets:\n  - name: registry-credentials\n",
        )
        .unwrap();
        assert_eq!(c.server_image_pull_secrets.len(), 1);
        assert_eq!(c.server_image_pull_secrets[0].name, "registry-credentials");
        assert_eq!(c.server_image_pull_policy, "IfNotPresent");
        assert_eq!(c.autoscaler, AutoscalerConfig::default());
    }

    #[test]
    fn refuses_what_would_silently_misbehave() {
        for (text, needle) in [
            ("defaultServerImage: x\nautoscalr: {}\n", "autoscalr"),
            ("defaultServerImage: \"\"\n", "defaultServerImage is empty"),
            ("serverImagePullPolicy: Always\n", "defaultServerImage"),
            (
                "defaultServerImage: x\nserverImagePullPolicy: Sometimes\n",
                "Sometimes",
            ),
            (
                "defaultServerImage: x\nautoscaler: {scrapeIntervalSeconds: 5, scrapeTimeoutSeconds: 10}\n",
                "exceeds scrapeIntervalSeconds",
            ),
            (
                "defaultServerImage: x\nautoscaler: {scrapeIntervalSeconds: 0}\n",
                "at least 1",
            ),
            (
                "defaultServerImage: x\nserverImagePullSecrets: [{}]\n",
                "without a name",
            ),
        ] {
            let err = OperatorConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.yaml");
        std::fs::write(
            &path,
            "defaultServerImage: x\nserverImagePullPolicy: Maybe\n",
        )
        .unwrap();
        let err = OperatorConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("operator.yaml") && err.contains("Maybe"),
            "{err}"
        );
        let missing = OperatorConfig::load(&dir.path().join("absent.yaml")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }), "{missing}");
        std::fs::write(&path, CHART_DEFAULT).unwrap();
        assert!(OperatorConfig::load(&path).is_ok());
    }

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "15", "15x", "s", "1.2.3s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
        assert!(parse_duration("15").unwrap_err().contains("15s"));
    }
}
