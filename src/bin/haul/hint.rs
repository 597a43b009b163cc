//! The one line of advice printed under a failure, when the user can do something about it:
//! which option or file fixes it. Chosen from the error's kind, HTTP status and circumstance.

/// What to do next about a failure, when something can be done.
pub(crate) fn hint(
    kind: haul::ErrorKind,
    status: Option<u16>,
    circumstance: Option<haul::Circumstance>,
    credentials_given: bool,
) -> Option<&'static str> {
    use haul::Circumstance;
    match circumstance {
        Some(Circumstance::ServerDigestDisagrees) => {
            return Some("--no-server-digest ignores the digest the server announces");
        }
        Some(Circumstance::ExistingFileDiffers) => {
            return Some("--on-exists overwrite downloads it again");
        }
        Some(Circumstance::ProxyRefusedCredentials) => {
            return Some(
                "the proxy refused the user and password given in --proxy (or $ALL_PROXY)",
            );
        }
        Some(Circumstance::UnknownHost) => {
            return Some(
                "the host name does not resolve: check the URL's spelling (or the DNS, --proxy)",
            );
        }
        _ => {}
    }
    match (kind, status) {
        (_, Some(401)) if credentials_given => Some(
            "the server refused the credentials given: check the password of --user (or the \
             --netrc-file entry)",
        ),
        (haul::ErrorKind::Tls, _) => Some(
            "the server's certificate is not trusted: --ca-cert FILE trusts a private CA \
             (--insecure skips the check, unsafely)",
        ),
        (_, Some(401)) => {
            Some("the server wants credentials: --user USER[:PASSWORD] or a --netrc-file entry")
        }
        (_, Some(407)) => {
            Some("the proxy wants credentials: --proxy http://USER:PASSWORD@HOST:PORT")
        }
        (haul::ErrorKind::UnsafePath, _) => {
            Some("remove the symlink, or choose another --dir, to download this file")
        }
        (haul::ErrorKind::TooLarge, _) => Some("raise --max-filesize to accept it"),
        _ => None,
    }
}
