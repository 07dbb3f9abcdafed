//! `ryzanstein-operator`: the Kubernetes operator binary. Its flags, environment and
//! configuration file are the contract in `charts/ryzanstein/README.md` ("Operator contract").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, ValueEnum};
use ryzanstein_operator::config::{parse_duration, OperatorConfig};
use ryzanstein_operator::context::Context;
use ryzanstein_operator::leader::LeaseSettings;
use ryzanstein_operator::metrics::Metrics;
use ryzanstein_operator::{http, run, shutdown};
use tracing_subscriber::EnvFilter;

/// Ryzanstein's Kubernetes operator: reconciles InferencePools and ModelDeployments.
/// `--http-addr`: a socket address, or an unbracketed IPv6 address followed by `:PORT`.
fn parse_http_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bad =
        || format!("{text:?} is not IP:PORT (e.g. 0.0.0.0:8080, 10.1.2.3:8080 or [fd00::1]:8080)");
    let (ip, port) = text.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    Ok(SocketAddr::new(ip, port))
}

#[derive(Debug, Parser)]
#[command(name = "ryzanstein-operator", version, args_override_self = true)]
struct Args {
    /// The operator configuration file (operator.yaml).
    #[arg(long, default_value = "/etc/ryzanstein/operator.yaml")]
    config: PathBuf,

    /// Address of the HTTP listener serving /metrics and /healthz: `IP:PORT`, `[IPv6]:PORT`, or
    /// `IPv6:PORT` as `$(POD_IP):PORT` expands to in an IPv6 cluster.
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = parse_http_addr)]
    http_addr: SocketAddr,

    /// Log format: json (one JSON object per line) or text. The filter comes from RUST_LOG.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,

    /// Reconcile only while holding a coordination.k8s.io Lease (needed with several replicas).
    #[arg(long, action = ArgAction::Set, default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,

    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, default_value = "ryzanstein-operator")]
    leader_election_lease_name: String,

    /// How long an unrenewed Lease stays with its holder (15s, 1m...).
    #[arg(long, value_parser = parse_duration, default_value = "15s")]
    leader_election_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    leader_election_renew_deadline: Duration,

    /// Time between attempts to acquire or renew the Lease.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    leader_election_retry_period: Duration,

    /// This replica's leader-election identity (the chart sets POD_NAME to the pod's name).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(args.log_format) {
        eprintln!("ryzanstein-operator: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(operate(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = error_chain(&e), "ryzanstein-operator failed");
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause whose text the message already contains (our
/// errors and kube's put their source in their own message).
fn error_chain(e: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Leader-election settings from the flags and environment, when `--leader-elect` is on.
fn lease_settings(args: &Args) -> anyhow::Result<Option<LeaseSettings>> {
    if !args.leader_elect {
        return Ok(None);
    }
    let identity = args
        .leader_election_identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let settings = LeaseSettings {
        namespace: args.leader_election_namespace.clone().unwrap_or_default(),
        name: args.leader_election_lease_name.clone(),
        identity,
        lease_duration: args.leader_election_lease_duration,
        renew_deadline: args.leader_election_renew_deadline,
        retry_period: args.leader_election_retry_period,
    };
    settings.check()?;
    Ok(Some(settings))
}

async fn operate(args: Args) -> anyhow::Result<()> {
    let config = Arc::new(OperatorConfig::load(&args.config)?);
    let leader = lease_settings(&args)?;
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot listen on --http-addr {}", args.http_addr))?;
    tracing::info!(
        http_addr = %args.http_addr,
        leader_election = leader.is_some(),
        default_server_image = %config.default_server_image,
        "ryzanstein-operator starting"
    );

    let (trigger, stop) = shutdown::channel();
    tokio::spawn(async move {
        shutdown::os_signal().await;
        trigger.trigger();
    });
    let (http_trigger, http_stop) = shutdown::channel();
    let server = tokio::spawn(http::serve(listener, metrics.clone(), http_stop));

    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
    let identity = leader.as_ref().map(|l| l.identity.clone());
    let ctx = Arc::new(Context::new(client, metrics, config, identity));
    let result = run::run(ctx, leader, stop).await;

    // The listener goes last, so /metrics and /healthz answer until the Lease is released.
    http_trigger.trigger();
    server
        .await
        .context("the HTTP listener task failed")?
        .context("the HTTP listener failed")?;
    tracing::info!("ryzanstein-operator stopped");
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addr_takes_ipv4_bracketed_and_bare_ipv6() {
        assert_eq!(
            parse_http_addr("10.1.2.3:8080").unwrap(),
            "10.1.2.3:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_http_addr("fd00::5:8080").unwrap(),
            "[fd00::5]:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(parse_http_addr("[fd00::5]:9090").unwrap().port(), 9090);
        assert!(parse_http_addr("$(POD_IP):8080")
            .unwrap_err()
            .contains("is not IP:PORT"));
        assert!(parse_http_addr("10.1.2.3").is_err());
    }

    /// The arguments the chart's Deployment passes (defaults, leader election on).
    #[test]
    fn accepts_the_chart_arguments() {
        let args = Args::try_parse_from([
            "ryzanstein-operator",
            "--config=/etc/ryzanstein/operator.yaml",
            "--http-addr=0.0.0.0:8080",
            "--log-format=json",
            "--leader-elect=true",
            "--leader-election-namespace=ryzanstein-system",
            "--leader-election-lease-name=ryzanstein-operator",
            "--leader-election-lease-duration=15s",
            "--leader-election-renew-deadline=10s",
            "--leader-election-retry-period=2s",
            "--leader-election-identity=ryzanstein-operator-abc",
            // extraArgs may repeat a flag: the last one wins.
            "--log-format=text",
        ])
        .unwrap();
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(args.leader_elect);
        assert_eq!(args.http_addr.port(), 8080);
        let lease = lease_settings(&args).unwrap().unwrap();
        assert_eq!(lease.namespace, "ryzanstein-system");
        assert_eq!(lease.identity, "ryzanstein-operator-abc");
        assert_eq!(lease.lease_duration, Duration::from_secs(15));
        assert_eq!(lease.renew_deadline, Duration::from_secs(10));
        assert_eq!(lease.retry_period, Duration::from_secs(2));
    }

    #[test]
    fn error_chains_do_not_repeat_themselves() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(ryzanstein_operator::Error::Io {
            action: "could not read the operator configuration",
            path: "/x.yaml".into(),
            source: io,
        })
        .context("starting");
        assert_eq!(
            error_chain(&e),
            "starting: could not read the operator configuration /x.yaml: no such file"
        );
    }

    #[test]
    fn leader_election_off_needs_no_lease_settings() {
        let args = Args::try_parse_from([
            "ryzanstein-operator",
            "--config=/x.yaml",
            "--leader-elect=false",
        ])
        .unwrap();
        assert!(lease_settings(&args).unwrap().is_none());
    }

    #[test]
    fn refuses_bad_values_with_the_flag_named() {
        for (flag, needle) in [
            ("--log-format=xml", "xml"),
            ("--leader-election-lease-duration=15", "15s"),
            ("--leader-elect=maybe", "maybe"),
        ] {
            let err = Args::try_parse_from(["ryzanstein-operator", flag])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
        let args = Args::try_parse_from([
            "ryzanstein-operator",
            "--leader-elect",
            "--leader-election-namespace=ns",
            "--leader-election-identity=me",
            "--leader-election-renew-deadline=20s",
        ])
        .unwrap();
        let err = lease_settings(&args).unwrap_err().to_string();
        assert!(err.contains("renew-deadline"), "{err}");
    }
}
