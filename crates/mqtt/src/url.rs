//! Where a broker is: `mqtt://host[:port]` or `mqtts://host[:port]`, and which protocol it
//! speaks. Both read from configuration files and command lines, with errors that say what
//! was expected.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1.
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// A broker URL: `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (an `[ipv6]` host in brackets).
    pub fn parse(text: &str) -> Result<BrokerUrl, String> {
        // Credentials typed into the URL are never echoed back.
        let shown = match (text.find("://"), text.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &text[..scheme + 3], &text[at..])
            }
            (_, Some(at)) => format!("***{}", &text[at..]),
            _ => text.to_owned(),
        };
        if text.contains('@') {
            return Err(format!(
                "credentials do not belong in the URL (found \"{shown}\"): give username and password_file instead"
            ));
        }
        let expected =
            || format!("expected a URL like \"mqtts://broker.example:8883\", found \"{shown}\"");
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(expected());
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '@', '?']) {
            return Err(expected());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| expected())?)
            }
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(expected());
        }
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for BrokerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BrokerUrl::parse(&s).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_bracketed_ipv6() {
        let url = BrokerUrl::parse("mqtts://alerts.example.net").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (true, "alerts.example.net", 8883)
        );
        let url = BrokerUrl::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port), (false, "::1", 1884));
        assert_eq!(url.to_string(), "mqtt://[::1]:1884");
        for bad in ["http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/p"] {
            assert!(
                BrokerUrl::parse(bad)
                    .unwrap_err()
                    .contains("expected a URL"),
                "{bad}"
            );
        }
        // Credentials are refused, and never echoed.
        let error = BrokerUrl::parse("mqtts://dev:hunter2@h:8883").unwrap_err();
        assert!(
            error.contains("credentials do not belong in the URL"),
            "{error}"
        );
        assert!(
            error.contains("mqtts://***@h:8883") && !error.contains("hunter2"),
            "{error}"
        );
        let error = BrokerUrl::parse("dev:hunter2@h:1883").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
