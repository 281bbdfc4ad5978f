//! `requests.get(url)` with ureq: the final url after redirects, the status and the size.
//!
//! ureq takes `HTTP_PROXY`/`HTTPS_PROXY` from the environment, as requests does. A proxy cannot
//! reach this machine's loopback, so requests to 127.0.0.1 and localhost go direct.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ureq::http::Uri;
use ureq::{Agent, ResponseExt};

/// What the demo prints of a response, as Python prints `i.url`, `i.status_code`, `len(i.content)`.
pub struct Page {
    pub url: String,
    pub status: u16,
    pub size: u64,
}

/// Two HTTP clients: one that goes direct, for loopback, and one that uses the environment's
/// proxy, if any. Cloning shares their connection pools.
#[derive(Clone)]
pub struct Agents {
    direct: Agent,
    proxied: Agent,
}

impl Agents {
    pub fn new() -> Agents {
        let agent = |proxy| -> Agent {
            Agent::config_builder()
                .proxy(proxy)
                // A 404 is a response, as in requests, not an error.
                .http_status_as_error(false)
                // No fetch waits for ever: a site that does not answer is that item's error.
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into()
        };
        Agents {
            direct: agent(None),
            proxied: agent(ureq::Proxy::try_from_env()),
        }
    }
}

/// An `http://` or `https://` URL with a host, or a one-line reason why not.
pub fn check(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("malformed URL {url:?}: {e}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => {}
        _ => {
            return Err(format!(
                "malformed URL {url:?}: want http://host/… or https://host/…"
            ));
        }
    }
    // The parser takes any digits for a port, and `Uri::port` then answers None as if there
    // were none: look at what follows the host ourselves.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let host_and_port = authority.rsplit('@').next().unwrap_or_default();
    let after_host = match host_and_port.rfind(']') {
        Some(i) => &host_and_port[i + 1..],
        None => host_and_port,
    };
    if let Some((_, port)) = after_host.split_once(':') {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!(
                "malformed URL {url:?}: the port must be a number from 1 to 65535"
            ));
        }
    }
    Ok(uri)
}

pub fn fetch(agents: &Agents, url: &str) -> Result<Page, String> {
    let uri = check(url)?;
    let agent = if is_loopback(uri.host().unwrap_or_default()) {
        &agents.direct
    } else {
        &agents.proxied
    };
    let mut response = agent.get(uri).call().map_err(|e| e.to_string())?;
    let url = response.get_uri().to_string();
    let status = response.status().as_u16();
    // Counts the body's bytes without keeping them, whatever its size.
    let mut body = response.body_mut().with_config().limit(u64::MAX).reader();
    let size = io::copy(&mut body, &mut io::sink()).map_err(|e| e.to_string())?;
    Ok(Page { url, status, size })
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check("http://www.baidu.com").is_ok());
        assert!(check("https://127.0.0.1:8080/www.qq.com").is_ok());
        assert!(check("http://[::1]:65535/").is_ok());
        assert!(check("http://user:secret@127.0.0.1/").is_ok());
        let bad_ports = [
            "http://127.0.0.1:99999/",
            "http://[::1]:65536/",
            "http://h:0/",
        ];
        for bad in bad_ports
            .into_iter()
            .chain(["http://h:/", "https://u@h:123456/"])
        {
            let err = check(bad).unwrap_err();
            assert!(err.contains("port"), "{bad}: {err}");
        }
        for bad in ["www.baidu.com", "ftp://x/", "http://", "not a url", ""] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_goes_direct() {
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["www.baidu.com", "10.0.0.1", "[2001:db8::1]"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
