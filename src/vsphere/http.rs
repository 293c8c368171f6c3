//! The HTTP client under the SOAP API and the datastore file access: one connection pool per
//! server, the trust rule of [`TlsTrust`], and one retry rule for what a busy or restarting
//! server does (503, connection resets, timeouts).
//!
//! Retries back off exponentially from [`RetryPolicy::first_delay`], doubling up to
//! [`RetryPolicy::max_delay`], at most [`RetryPolicy::attempts`] tries in all. Only requests
//! that can be repeated are retried: reads, and SOAP calls that change nothing; a SOAP call
//! that starts a task is sent once, since a lost answer may hide a task that runs.

use std::time::Duration;

use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector, TcpConnector};
use ureq::Agent;

use super::tls::{PinnedTls, TlsTrust};

/// When and how often a failed request is repeated.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second try.
    pub first_delay: Duration,
    /// Longest wait between tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six tries over about 6 s: a vCenter service restart or a host's 503 under load passes in
    /// that time; a server that is really gone fails the backup within seconds, not minutes.
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `n` (from 1 for the second try).
    pub fn delay(&self, n: u32) -> Duration {
        let d = self
            .first_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(16));
        d.min(self.max_delay)
    }
}

/// How one try of a request failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try (503, reset, timeout, short body), with what happened.
    Transient(String),
    /// Final (4xx, a fault, a TLS refusal).
    Fatal(String),
}

/// Runs `f` until it succeeds, fails for good or runs out of tries; the error says how many
/// tries were made and what the last one met.
pub fn with_retries<T>(
    policy: &RetryPolicy,
    mut f: impl FnMut() -> Result<T, Failure>,
) -> Result<T, String> {
    let attempts = policy.attempts.max(1);
    let mut n = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(why)) => return Err(why),
            Err(Failure::Transient(why)) => {
                n += 1;
                if n >= attempts {
                    return Err(format!("{why} (gave up after {attempts} tries)"));
                }
                log::debug!("{why}; retrying in {:?}", policy.delay(n));
                std::thread::sleep(policy.delay(n));
            }
        }
    }
}

/// Whether a ureq error is worth another try: the network, not the request, failed.
pub fn classify(e: ureq::Error) -> Failure {
    let why = e.to_string();
    match e {
        // rustls reports a refused certificate as InvalidData: no retry makes it acceptable.
        ureq::Error::Io(ref io) if io.kind() == std::io::ErrorKind::InvalidData => {
            if why.contains("InvalidContentType") {
                return Failure::Fatal(format!(
                    "{why} (the server does not answer TLS on this port: if it serves plain \
                     HTTP, give an http:// URL)"
                ));
            }
            if why.contains("invalid peer certificate") && !why.contains("pinned") {
                return Failure::Fatal(format!(
                    "{why} (the system roots do not trust this certificate: pin it with \
                     --thumbprint SHA256 as vSphere shows it, or skip the check with --insecure)"
                ));
            }
            Failure::Fatal(why)
        }
        ureq::Error::Io(_)
        | ureq::Error::Timeout(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Protocol(_) => Failure::Transient(why),
        _ => Failure::Fatal(why),
    }
}

/// Builds the agent for one server.
pub fn agent(trust: TlsTrust, connections: usize) -> Agent {
    let tls = match trust {
        TlsTrust::System | TlsTrust::Pinned(_) => ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build(),
        TlsTrust::Insecure => ureq::tls::TlsConfig::builder()
            .disable_verification(true)
            .build(),
    };
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(tls)
        .max_idle_connections_per_host(connections.max(1))
        .max_idle_connections(connections.max(1) * 2)
        .timeout_connect(Some(Duration::from_secs(20)))
        // A snapshot of a large VM takes minutes, but its task is polled, not waited on in one
        // request; no single answer should take longer than this.
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_recv_body(Some(Duration::from_secs(300)))
        .user_agent(concat!("vdar/", env!("CARGO_PKG_VERSION")))
        .build();
    match trust {
        TlsTrust::Pinned(pin) => Agent::with_parts(
            config,
            TcpConnector::default().chain(PinnedTls::new(pin)),
            DefaultResolver::default(),
        ),
        _ => config.new_agent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_give_up() {
        let p = RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        assert_eq!(p.delay(1), Duration::from_millis(1));
        assert_eq!(p.delay(5), Duration::from_millis(2));
        let mut tries = 0;
        let r: Result<(), String> = with_retries(&p, || {
            tries += 1;
            Err(Failure::Transient("503".into()))
        });
        assert_eq!(tries, 3);
        assert!(r.unwrap_err().contains("after 3 tries"));
        let mut tries = 0;
        let r: Result<(), String> = with_retries(&p, || {
            tries += 1;
            Err(Failure::Fatal("404".into()))
        });
        assert_eq!((tries, r.unwrap_err().as_str()), (1, "404"));
    }
}
