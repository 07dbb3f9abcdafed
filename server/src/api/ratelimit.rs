//! Per-tenant limits: requests per minute, tokens per minute (prompt plus completion) and
//! requests in flight, each tenant on its own; and each tenant's weight in the engine's fair
//! queue.
//!
//! The limits come from `--tenant-limits FILE`, JSON, read again when it changes (see
//! [`watched`](super::watched)):
//!
//! ```json
//! { "tenants": { "team-a": { "requestsPerMinute": 600, "tokensPerMinute": 100000,
//!                            "maxConcurrentRequests": 8, "weight": 2 } },
//!   "default": { "requestsPerMinute": 60 } }
//! ```
//!
//! `default` applies to tenants the file does not name (absent: no limit). Every field is
//! optional; an absent limit is no limit, `weight` is 1. The numbers are what this server
//! admits.
//!
//! How a request is counted:
//! - On arrival (every API route): one request, and one in flight until its response body has
//!   been sent or dropped (a stream counts until it ends). Refused with 429 when the tenant
//!   has no request left this minute or has `maxConcurrentRequests` in flight.
//! - Once its prompt is tokenized (generation and embeddings): its prompt tokens, which must be
//!   in the bucket (else 429; a prompt larger than the whole minute's tokens is a 400, since
//!   waiting would not help). Completion tokens are charged when generation ends and may take
//!   the bucket below zero: the tenant's next requests wait until the debt has refilled, so
//!   over time a tenant gets its tokens per minute and no more.
//!
//! Buckets hold a minute's worth and refill continuously. Every answer to a tenant with limits
//! carries OpenAI's `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*`
//! headers (`requests`, `tokens`); a 429 also carries `Retry-After` in whole seconds. A limit
//! changed in the file starts the tenant's bucket full.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::{Tenant, DEFAULT_TENANT};
use super::bucket::TokenBucket;
use super::watched::{self, WatchedFile};
use super::ApiError;
use crate::engine::stats::{Histogram, HistogramSnapshot};
use crate::engine::TenantTag;

/// One tenant's limits (absent: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_concurrent_requests: Option<u32>,
    /// Share of the engine against other tenants with waiting requests (1 to 1000).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            requests_per_minute: None,
            tokens_per_minute: None,
            max_concurrent_requests: None,
            weight: 1,
        }
    }
}

/// The limits file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitTable {
    #[serde(default)]
    pub tenants: BTreeMap<String, Limit>,
    /// For tenants not in `tenants`.
    #[serde(default)]
    pub default: Option<Limit>,
}

impl LimitTable {
    /// Parses the file; the error says which field of which tenant is wrong.
    pub fn parse(text: &str) -> Result<LimitTable, String> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let table: LimitTable = serde_path_to_error::deserialize(de)
            .map_err(|e| format!("at {}: {}", e.path(), e.inner()))?;
        let named = table.tenants.iter().map(|(n, l)| (n.as_str(), l));
        for (name, l) in named.chain(table.default.as_ref().map(|l| ("default", l))) {
            let zero = [
                ("requestsPerMinute", l.requests_per_minute == Some(0)),
                ("tokensPerMinute", l.tokens_per_minute == Some(0)),
                (
                    "maxConcurrentRequests",
                    l.max_concurrent_requests == Some(0),
                ),
            ];
            if let Some((field, _)) = zero.iter().find(|(_, z)| *z) {
                return Err(format!(
                    "{name}: {field} is 0, which would refuse every request; give at least 1, \
                     or leave the field out for no limit"
                ));
            }
            if !(1..=1000).contains(&l.weight) {
                return Err(format!(
                    "{name}: weight is {}; give a weight from 1 to 1000",
                    l.weight
                ));
            }
        }
        Ok(table)
    }

    /// The limits of `tenant`.
    pub fn limit_of(&self, tenant: &str) -> Limit {
        self.tenants
            .get(tenant)
            .or(self.default.as_ref())
            .copied()
            .unwrap_or_default()
    }
}

/// Which limit refused a request (the `reason` label of the rejection counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    RequestsPerMinute,
    TokensPerMinute,
    Concurrency,
    /// The prompt alone is more than the tenant's tokens per minute.
    TooLarge,
}

impl Reason {
    pub const ALL: [Reason; 4] = [
        Reason::RequestsPerMinute,
        Reason::TokensPerMinute,
        Reason::Concurrency,
        Reason::TooLarge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RequestsPerMinute => "requests_per_minute",
            Reason::TokensPerMinute => "tokens_per_minute",
            Reason::Concurrency => "concurrency",
            Reason::TooLarge => "too_large",
        }
    }
}

/// Per-tenant counters for `/metrics`.
#[derive(Default)]
struct Counters {
    admitted: u64,
    rejected: [u64; Reason::ALL.len()],
    prompt_tokens: u64,
    completion_tokens: u64,
    /// From admission to the end of the response body.
    duration: Histogram,
}

struct TenantState {
    limit: Limit,
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
    in_flight: u32,
    counters: Counters,
}

impl TenantState {
    fn new(limit: Limit, now: Instant) -> TenantState {
        TenantState {
            limit,
            requests: limit
                .requests_per_minute
                .map(|n| TokenBucket::per_minute(n, now)),
            tokens: limit
                .tokens_per_minute
                .map(|n| TokenBucket::per_minute(n, now)),
            in_flight: 0,
            counters: Counters::default(),
        }
    }

    /// Follows a changed limit: new buckets, counters kept.
    fn sync(&mut self, limit: Limit, now: Instant) {
        if limit != self.limit {
            let counters = std::mem::take(&mut self.counters);
            let in_flight = self.in_flight;
            *self = TenantState {
                in_flight,
                counters,
                ..TenantState::new(limit, now)
            };
        }
    }
}

/// A tenant's counters and gauges, for `/metrics`.
#[derive(Debug, Clone)]
pub struct TenantSnapshot {
    pub tenant: String,
    pub in_flight: u32,
    pub admitted: u64,
    /// In the order of [`Reason::ALL`].
    pub rejected: [u64; Reason::ALL.len()],
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub duration: HistogramSnapshot,
}

/// Why a request was refused, and when to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub tenant: String,
    pub reason: Reason,
    /// The limit that refused it.
    pub limit: u64,
    /// How long until the request would be admitted (zero for concurrency: when one ends).
    pub retry_after: Duration,
    /// Tokens the request asked for (tokens limits only).
    pub requested: u64,
}

impl Rejection {
    fn message(&self) -> String {
        let Rejection {
            tenant,
            limit,
            requested,
            ..
        } = self;
        let retry = retry_after_secs(self.retry_after);
        match self.reason {
            Reason::RequestsPerMinute => format!(
                "tenant {tenant:?} is over its limit of {limit} requests per minute; retry in \
                 {retry}s"
            ),
            Reason::TokensPerMinute => format!(
                "tenant {tenant:?} is over its limit of {limit} tokens per minute (this request \
                 needs {requested} prompt tokens); retry in {retry}s"
            ),
            Reason::Concurrency => format!(
                "tenant {tenant:?} already has {limit} requests in flight, its limit; retry when \
                 one of them has finished"
            ),
            Reason::TooLarge => format!(
                "the prompt is {requested} tokens, more than tenant {tenant:?} may use in a \
                 minute ({limit} tokens per minute); send a shorter prompt"
            ),
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs_f64().ceil() as u64).max(1)
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r.reason {
            Reason::TooLarge => ApiError::invalid("messages", r.message()),
            _ => ApiError::RateLimited {
                message: r.message(),
                retry_after_secs: retry_after_secs(r.retry_after),
            },
        }
    }
}

/// The tenants' limits and their state.
pub struct RateLimiter {
    file: Option<WatchedFile<LimitTable>>,
    /// Every caller's tenant, whatever its key says (`--tenant`: a pod serving one tenant).
    only_tenant: Option<String>,
    tenants: Mutex<HashMap<String, TenantState>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("file", &self.file)
            .finish()
    }
}

impl Default for RateLimiter {
    /// No limits: every tenant is admitted (and counted), weight 1.
    fn default() -> Self {
        RateLimiter {
            file: None,
            only_tenant: None,
            tenants: Mutex::new(HashMap::new()),
        }
    }
}

impl RateLimiter {
    /// The limits of `file`; fails when it cannot be read or is invalid.
    pub fn from_file(file: PathBuf) -> Result<RateLimiter, String> {
        Ok(RateLimiter {
            file: Some(WatchedFile::open(
                file,
                "tenant limits file",
                LimitTable::parse,
            )?),
            only_tenant: None,
            tenants: Mutex::new(HashMap::new()),
        })
    }

    /// Counts every caller as `tenant` (limits, metrics, the fair queue), whatever tenant its
    /// API key names: for a server that serves one tenant's callers.
    pub fn with_only_tenant(mut self, tenant: Option<String>) -> RateLimiter {
        self.only_tenant = tenant;
        self
    }

    /// The tenant a request counts for: `--tenant` when given, else its key's, else `default`.
    fn tenant_of<'a>(&'a self, key_tenant: Option<&'a Tenant>) -> &'a str {
        self.only_tenant
            .as_deref()
            .or(key_tenant.map(|t| t.0.as_str()))
            .unwrap_or(DEFAULT_TENANT)
    }

    /// Watches the limits file for changes (a no-op without one).
    pub fn spawn_reloader(self: &Arc<Self>) {
        if self.file.is_some() {
            watched::spawn_reloader(self, |l| {
                l.reload_if_changed();
            });
        }
    }

    /// Reads the limits file again when it changed; true when the limits were replaced.
    pub fn reload_if_changed(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.reload_if_changed())
    }

    fn limit_of(&self, tenant: &str) -> Limit {
        self.file
            .as_ref()
            .map_or_else(Limit::default, |f| f.get().limit_of(tenant))
    }

    /// Runs `f` on the tenant's state, brought up to date with the file.
    fn with<R>(&self, tenant: &str, now: Instant, f: impl FnOnce(&mut TenantState) -> R) -> R {
        let limit = self.limit_of(tenant);
        let mut tenants = self.tenants.lock().expect("tenant table lock");
        let state = match tenants.get_mut(tenant) {
            Some(s) => {
                s.sync(limit, now);
                s
            }
            None => tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| TenantState::new(limit, now)),
        };
        f(state)
    }

    /// Admits one request of `tenant`: a request from its bucket and a slot in flight, held
    /// by the returned permit.
    pub fn admit(self: &Arc<Self>, tenant: &str, now: Instant) -> Result<Permit, Rejection> {
        let refuse = |reason, limit, retry_after| Rejection {
            tenant: tenant.to_owned(),
            reason,
            limit,
            retry_after,
            requested: 0,
        };
        let weight = self.with(tenant, now, |s| {
            let result = match (s.limit.max_concurrent_requests, &mut s.requests) {
                (Some(max), _) if s.in_flight >= max => {
                    Err(refuse(Reason::Concurrency, max as u64, Duration::ZERO))
                }
                (_, Some(bucket)) => bucket
                    .try_take(1, now)
                    .map_err(|wait| refuse(Reason::RequestsPerMinute, bucket.capacity(), wait)),
                _ => Ok(()),
            };
            match &result {
                Ok(()) => {
                    s.in_flight += 1;
                    s.counters.admitted += 1;
                }
                Err(r) => s.counters.rejected[r.reason as usize] += 1,
            }
            result.map(|()| s.limit.weight)
        })?;
        Ok(Permit {
            limiter: self.clone(),
            tag: TenantTag {
                name: tenant.into(),
                weight,
            },
            admitted: now,
        })
    }

    /// The `x-ratelimit-*` headers of `tenant` now (none for limits it does not have).
    pub fn headers(&self, tenant: &str, now: Instant) -> HeaderMap {
        let mut h = HeaderMap::new();
        self.with(tenant, now, |s| {
            for (kind, bucket) in [("requests", &mut s.requests), ("tokens", &mut s.tokens)] {
                let Some(b) = bucket else { continue };
                let mut put = |name: String, v: String| {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::try_from(name),
                        HeaderValue::try_from(v),
                    ) {
                        h.insert(n, v);
                    }
                };
                put(
                    format!("x-ratelimit-limit-{kind}"),
                    b.capacity().to_string(),
                );
                put(
                    format!("x-ratelimit-remaining-{kind}"),
                    b.remaining(now).to_string(),
                );
                put(
                    format!("x-ratelimit-reset-{kind}"),
                    go_duration(b.until_full(now)),
                );
            }
        });
        h
    }

    /// Every tenant seen so far, sorted by name.
    pub fn snapshot(&self) -> Vec<TenantSnapshot> {
        let tenants = self.tenants.lock().expect("tenant table lock");
        let mut out: Vec<TenantSnapshot> = tenants
            .iter()
            .map(|(name, s)| TenantSnapshot {
                tenant: name.clone(),
                in_flight: s.in_flight,
                admitted: s.counters.admitted,
                rejected: s.counters.rejected,
                prompt_tokens: s.counters.prompt_tokens,
                completion_tokens: s.counters.completion_tokens,
                duration: s.counters.duration.snapshot(),
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

/// A duration as OpenAI writes its reset headers (Go's style): `250ms`, `1.5s`, `6m0s`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, s) = (ms / 60_000, (ms % 60_000) as f64 / 1000.0);
    let s = format!("{s:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match m {
        0 => format!("{s}s"),
        _ => format!("{m}m{s}s"),
    }
}

/// One admitted request: holds its slot in flight until dropped, and meters its tokens.
pub struct Permit {
    limiter: Arc<RateLimiter>,
    tag: TenantTag,
    admitted: Instant,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("tenant", &self.tag).finish()
    }
}

impl Permit {
    /// The tenant, as the engine's fair queue sees it.
    pub fn tag(&self) -> TenantTag {
        self.tag.clone()
    }

    pub fn tenant(&self) -> &str {
        &self.tag.name
    }

    /// Takes the prompt's tokens from the tenant's bucket (they must be there).
    pub fn take_prompt(&self, tokens: usize, now: Instant) -> Result<(), Rejection> {
        let tokens = tokens as u64;
        self.limiter.with(self.tenant(), now, |s| {
            let refuse = |reason, limit, retry_after| Rejection {
                tenant: self.tenant().to_owned(),
                reason,
                limit,
                retry_after,
                requested: tokens,
            };
            let result = match &mut s.tokens {
                Some(b) if tokens > b.capacity() => {
                    Err(refuse(Reason::TooLarge, b.capacity(), Duration::ZERO))
                }
                Some(b) => b
                    .try_take(tokens, now)
                    .map_err(|wait| refuse(Reason::TokensPerMinute, b.capacity(), wait)),
                None => Ok(()),
            };
            match &result {
                Ok(()) => s.counters.prompt_tokens += tokens,
                Err(r) => s.counters.rejected[r.reason as usize] += 1,
            }
            result
        })
    }

    /// Charges generated tokens (the bucket may go below zero).
    pub fn charge_completion(&self, tokens: usize) {
        let now = Instant::now();
        self.limiter.with(self.tenant(), now, |s| {
            s.counters.completion_tokens += tokens as u64;
            if let Some(b) = &mut s.tokens {
                b.charge(tokens as u64, now);
            }
        });
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let took = now.saturating_duration_since(self.admitted);
        self.limiter.with(self.tenant(), now, |s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.counters.duration.observe(took);
        });
    }
}

/// Middleware: admits the request for its tenant (see [`RateLimiter::tenant_of`]) or answers 429, adds the `x-ratelimit-*` headers, and keeps the request in
/// flight until its response body is done. Handlers find the [`Permit`] as an extension.
pub async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    mut req: Request,
    next: Next,
) -> Response {
    let tenant = limiter
        .tenant_of(req.extensions().get::<Tenant>())
        .to_owned();
    let permit = match limiter.admit(&tenant, Instant::now()) {
        Ok(p) => Arc::new(p),
        Err(rejection) => {
            let mut resp = ApiError::from(rejection).into_response();
            resp.headers_mut()
                .extend(limiter.headers(&tenant, Instant::now()));
            return resp;
        }
    };
    req.extensions_mut().insert(permit.clone());
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .extend(limiter.headers(&tenant, Instant::now()));
    resp.map(|body| {
        Body::new(Held {
            body,
            _permit: permit,
        })
    })
}

/// A response body that holds the request's permit until the body is sent or dropped.
struct Held {
    body: Body,
    _permit: Arc<Permit>,
}

impl http_body::Body for Held {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(json: &str) -> (tempfile::TempDir, Arc<RateLimiter>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.json");
        std::fs::write(&path, json).unwrap();
        (dir, Arc::new(RateLimiter::from_file(path).unwrap()))
    }

    #[test]
    fn the_file_names_tenants_and_a_default_and_bad_values_are_explained() {
        let t = LimitTable::parse(
            r#"{"tenants": {"a": {"requestsPerMinute": 5, "weight": 3}},
                "default": {"maxConcurrentRequests": 2}}"#,
        )
        .unwrap();
        assert_eq!(t.limit_of("a").requests_per_minute, Some(5));
        assert_eq!(t.limit_of("a").weight, 3);
        assert_eq!(t.limit_of("b").max_concurrent_requests, Some(2));
        assert_eq!(t.limit_of("b").weight, 1);
        assert_eq!(
            LimitTable::parse("{}").unwrap().limit_of("x"),
            Limit::default()
        );
        let e = LimitTable::parse(r#"{"tenants": {"a": {"requestPerMinute": 5}}}"#).unwrap_err();
        assert!(
            e.contains("tenants.a") && e.contains("requestPerMinute"),
            "{e}"
        );
        let e = LimitTable::parse(r#"{"tenants": {"a": {"tokensPerMinute": 0}}}"#).unwrap_err();
        assert!(e.contains("a: tokensPerMinute is 0"), "{e}");
        let e = LimitTable::parse(r#"{"default": {"weight": 0}}"#).unwrap_err();
        assert!(e.contains("default: weight is 0"), "{e}");
    }

    #[test]
    fn a_tenant_over_its_requests_is_refused_while_another_is_admitted() {
        let (_d, l) = limiter(r#"{"tenants": {"a": {"requestsPerMinute": 2}}}"#);
        let now = Instant::now();
        let _p1 = l.admit("a", now).unwrap();
        let _p2 = l.admit("a", now).unwrap();
        let r = l.admit("a", now).unwrap_err();
        assert_eq!(r.reason, Reason::RequestsPerMinute);
        assert!((r.retry_after.as_secs_f64() - 30.0).abs() < 1e-6);
        let e = ApiError::from(r);
        assert_eq!(e.status(), 429);
        assert!(e.body().error.message.contains("retry in 30s"));
        for _ in 0..10 {
            l.admit("b", now).unwrap();
        }
        assert!(l.admit("a", now + Duration::from_secs(30)).is_ok());
        let h = l.headers("a", now + Duration::from_secs(30));
        assert_eq!(h["x-ratelimit-limit-requests"], "2");
        assert_eq!(h["x-ratelimit-remaining-requests"], "0");
        assert_eq!(h["x-ratelimit-reset-requests"], "1m0s");
        assert!(l.headers("b", now).is_empty(), "no limits, no headers");
        let snap = l.snapshot();
        assert_eq!((snap[0].tenant.as_str(), snap[0].admitted), ("a", 3));
        assert_eq!(snap[0].rejected[Reason::RequestsPerMinute as usize], 1);
        assert_eq!((snap[1].tenant.as_str(), snap[1].admitted), ("b", 10));
    }

    #[test]
    fn concurrency_is_held_until_the_permit_drops() {
        let (_d, l) = limiter(r#"{"default": {"maxConcurrentRequests": 1}}"#);
        let now = Instant::now();
        let p = l.admit("a", now).unwrap();
        assert_eq!(l.admit("a", now).unwrap_err().reason, Reason::Concurrency);
        assert!(l.admit("b", now).is_ok(), "another tenant has its own slot");
        drop(p);
        assert!(l.admit("a", now).is_ok());
    }

    #[test]
    fn tokens_prompt_up_front_and_completion_as_debt() {
        let (_d, l) = limiter(r#"{"tenants": {"a": {"tokensPerMinute": 600}}}"#);
        let now = Instant::now();
        let p = l.admit("a", now).unwrap();
        let big = p.take_prompt(601, now).unwrap_err();
        assert_eq!(big.reason, Reason::TooLarge);
        assert_eq!(ApiError::from(big).status(), 400);
        p.take_prompt(500, now).unwrap();
        let r = p.take_prompt(200, now).unwrap_err();
        assert_eq!(r.reason, Reason::TokensPerMinute);
        assert_eq!(retry_after_secs(r.retry_after), 10);
        p.charge_completion(300);
        let r = p.take_prompt(1, Instant::now()).unwrap_err();
        assert!(r.retry_after > Duration::from_secs(20), "in debt: {r:?}");
        let snap = &l.snapshot()[0];
        assert_eq!((snap.prompt_tokens, snap.completion_tokens), (500, 300));
        assert_eq!(snap.rejected[Reason::TokensPerMinute as usize], 2);
        assert_eq!(snap.rejected[Reason::TooLarge as usize], 1);
    }

    #[test]
    fn a_changed_file_changes_the_limits() {
        let (d, l) = limiter(r#"{"tenants": {"a": {"requestsPerMinute": 1}}}"#);
        let now = Instant::now();
        let _p = l.admit("a", now).unwrap();
        assert!(l.admit("a", now).is_err());
        let path = d.path().join("limits.json");
        std::fs::write(&path, r#"{"tenants": {"a": {"requestsPerMinute": 100}}}"#).unwrap();
        super::super::watched::tests::set_mtime(&path, 1_000);
        assert!(l.reload_if_changed());
        let _q = l.admit("a", now).unwrap();
        assert_eq!(
            l.snapshot()[0].in_flight,
            2,
            "in flight survives the change"
        );
    }

    #[test]
    fn one_tenant_for_every_caller() {
        let l = RateLimiter::default();
        let key = Tenant("app-1".into());
        assert_eq!(l.tenant_of(Some(&key)), "app-1");
        assert_eq!(l.tenant_of(None), DEFAULT_TENANT);
        let l = l.with_only_tenant(Some("team-a".into()));
        assert_eq!(l.tenant_of(Some(&key)), "team-a");
        assert_eq!(l.tenant_of(None), "team-a");
    }

    #[test]
    fn reset_headers_read_like_openais() {
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(61_250)), "1m1.25s");
    }
}
