//! Which proxy a request goes through: the one given (`--proxy`, `DownloaderBuilder::proxy`)
//! or the environment's (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, in either case), unless
//! the host is in the no-proxy list (`--no-proxy`, else `NO_PROXY`). http, https, socks5 and
//! socks5h proxies (with credentials in the URL) are understood. haul decides this itself and
//! hands reqwest its choice per request, so what an event reports is what is used.

use url::Url;

/// The proxy rules of one downloader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProxyChoice {
    /// A proxy for every request.
    explicit: Option<Url>,
    /// Per scheme, from the environment.
    http: Option<Url>,
    https: Option<Url>,
    all: Option<Url>,
    /// Hosts reached directly.
    no_proxy: Vec<String>,
}

/// Why a proxy URL was refused.
pub(crate) fn check_proxy_url(text: &str) -> Result<Url, String> {
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| format!("invalid proxy `{text}`: {e}"))?;
    match url.scheme() {
        "http" | "https" | "socks5" | "socks5h" => Ok(url),
        other => Err(format!(
            "unsupported proxy scheme `{other}` (use http, https, socks5 or socks5h)"
        )),
    }
}

impl ProxyChoice {
    /// The rules: `explicit` for everything when given, else the environment; `no_proxy`
    /// (or `NO_PROXY`) exempts hosts.
    pub(crate) fn new(explicit: Option<Url>, no_proxy: Option<&str>) -> Result<Self, String> {
        let env = |names: [&str; 2]| -> Result<Option<Url>, String> {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
                .map(|value| check_proxy_url(value.trim()))
                .transpose()
        };
        let list = match no_proxy {
            Some(list) => list.to_owned(),
            None => std::env::var("NO_PROXY")
                .or_else(|_| std::env::var("no_proxy"))
                .unwrap_or_default(),
        };
        Ok(Self {
            explicit,
            http: env(["HTTP_PROXY", "http_proxy"])?,
            https: env(["HTTPS_PROXY", "https_proxy"])?,
            all: env(["ALL_PROXY", "all_proxy"])?,
            no_proxy: list
                .split(',')
                .map(|entry| entry.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|entry| !entry.is_empty())
                .collect(),
        })
    }

    /// Whether no request goes through a proxy.
    pub(crate) fn is_direct(&self) -> bool {
        self.explicit.is_none() && self.http.is_none() && self.https.is_none() && self.all.is_none()
    }

    /// The proxy for `url`, if any.
    pub(crate) fn choose(&self, url: &Url) -> Option<&Url> {
        if self.bypasses(url) {
            return None;
        }
        self.explicit.as_ref().or(match url.scheme() {
            "https" => self.https.as_ref().or(self.all.as_ref()),
            _ => self.http.as_ref().or(self.all.as_ref()),
        })
    }

    fn bypasses(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            let entry = entry.split_once(':').map_or(entry.as_str(), |(h, _)| h);
            entry == "*"
                || host == entry
                || host
                    .strip_suffix(entry)
                    .is_some_and(|rest| rest.ends_with('.'))
                || cidr_contains(entry, &host)
        })
    }
}

/// Whether `host` is an IPv4 address inside `entry` written as `A.B.C.D/N`.
fn cidr_contains(entry: &str, host: &str) -> bool {
    let Some((network, bits)) = entry.split_once('/') else {
        return false;
    };
    let (Ok(network), Ok(bits), Ok(address)) = (
        network.parse::<std::net::Ipv4Addr>(),
        bits.parse::<u32>(),
        host.parse::<std::net::Ipv4Addr>(),
    ) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0);
    u32::from(network) & mask == u32::from(address) & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn the_explicit_proxy_wins_and_the_list_exempts_hosts_domains_and_networks() {
        let choice = ProxyChoice {
            explicit: Some(url("socks5h://u:p@127.0.0.1:1080")),
            no_proxy: vec![
                "example.org".into(),
                "10.0.0.0/8".into(),
                "localhost".into(),
            ],
            ..ProxyChoice::default()
        };
        assert!(choice.choose(&url("http://other.net/f")).is_some());
        for direct in [
            "http://example.org/f",
            "https://sub.example.org/f",
            "http://10.1.2.3/f",
            "http://localhost:8080/f",
        ] {
            assert!(choice.choose(&url(direct)).is_none(), "{direct}");
        }
        assert!(choice.choose(&url("http://notexample.org/f")).is_some());
    }

    #[test]
    fn environment_proxies_go_by_scheme() {
        let choice = ProxyChoice {
            http: Some(url("http://h:3128")),
            all: Some(url("socks5://s:1080")),
            ..ProxyChoice::default()
        };
        assert_eq!(
            choice.choose(&url("http://x/")).unwrap().host_str(),
            Some("h")
        );
        assert_eq!(
            choice.choose(&url("https://x/")).unwrap().host_str(),
            Some("s")
        );
    }

    #[test]
    fn proxy_urls_are_checked() {
        assert!(check_proxy_url("127.0.0.1:3128").is_ok());
        assert!(check_proxy_url("socks5h://127.0.0.1:1080").is_ok());
        assert!(check_proxy_url("ftp://x").is_err());
    }
}
