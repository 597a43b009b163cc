//! What a transport error's chain of causes says: the words worth showing, and the causes
//! that decide a failure's class (a refused certificate, an unknown host, a malformed answer,
//! a SOCKS proxy that refused the credentials). reqwest, hyper and the resolver report some of
//! these only as text, which is matched here and nowhere else.

use std::io;

/// A transport error's cause in a few words: the chain below reqwest's own "error sending
/// request" layer, without hyper's "client error (Connect)" wrappers, each said once.
pub(super) fn transport_cause(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in causes(error).skip(1) {
        let text = cause.to_string();
        if text.starts_with("client error (") || parts.iter().any(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    if parts.is_empty() {
        let text = error.to_string();
        // reqwest names the URL, which the message already does.
        return text.split(" for url (").next().unwrap_or(&text).to_owned();
    }
    parts.join(": ")
}

/// ` Not Found` for 404: the standard reason phrase of a status, when it has one.
pub(super) fn reason_phrase(status: u16) -> String {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .map_or_else(String::new, |reason| format!(" {reason}"))
}

/// Whether a SOCKS proxy refused the credentials (or user/password authentication at all):
/// retrying with the same ones cannot help. hyper-util's SOCKS errors reach us as text.
pub(super) fn is_proxy_auth_refused(error: &reqwest::Error) -> bool {
    causes(error).any(|cause| {
        let text = cause.to_string();
        text.contains("credentials not accepted")
            || text.contains("does not support user/pass authentication")
    })
}

/// Whether the host name does not exist (`EAI_NONAME`): retrying cannot help, unlike a
/// temporary resolver failure (`EAI_AGAIN`), which is retried. The resolver's error reaches us
/// only as text, so the system's message is what is matched.
pub(super) fn is_unknown_host(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if text.contains("Name or service not known") || text.contains("nodename nor servname") {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether the server's answer could not be parsed as HTTP (two different `Content-Length`
/// values, a malformed header or status line): the same server sends the same answer again,
/// so retrying cannot help.
pub(super) fn is_malformed_answer(error: &reqwest::Error) -> bool {
    causes(error).any(|cause| {
        cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(|hyper| hyper.is_parse() || hyper.is_parse_status())
    })
}

/// Every error in `error`'s chain, the ones an `io::Error` wraps included.
pub(super) fn causes<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'e (dyn std::error::Error + 'static)> {
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    std::iter::from_fn(move || {
        let cause = pending.pop()?;
        // `io::Error::source()` skips the error it wraps, so look inside it explicitly.
        if let Some(inner) = cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
        {
            pending.push(inner);
        }
        if let Some(next) = cause.source() {
            pending.push(next);
        }
        Some(cause)
    })
}

/// Whether a transport error comes from a rejected TLS certificate (retrying cannot help).
pub(super) fn is_certificate_error(error: &reqwest::Error) -> bool {
    causes(error)
        .find_map(|cause| cause.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| {
            matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        })
}
