//! Credentials for servers that want Basic authentication: given for a request
//! (`Request::with_basic_auth`, `user=`/`password=` in an input file), for every request of a
//! downloader (`--user`), or per host in a `.netrc` file. The request's and the downloader's
//! go only to the request's own host, never to another host a redirect leads to; a `.netrc`
//! entry goes only to its own machine. They are never shown in events, state files, logs or
//! messages.

use crate::input::LineError;

/// A user name and a password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The entries of a `.netrc` file (`machine HOST login USER password PASS`, and `default`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Netrc {
    /// Per machine (`None`: the `default` entry), the credentials.
    entries: Vec<(Option<String>, BasicAuth)>,
}

impl Netrc {
    /// Parses a `.netrc` file: `machine`, `default`, `login`, `password`, `account` and
    /// `macdef` tokens (macros are skipped), values quoted or not.
    ///
    /// # Errors
    /// A token that needs a value and has none, or an unknown token, with its line.
    pub fn parse(text: &str) -> Result<Self, LineError> {
        let tokens = tokenize(&without_macros(text));
        let mut entries = Vec::new();
        let mut current: Option<(Option<String>, String, String)> = None;
        let mut index = 0;
        while index < tokens.len() {
            let (line, token) = (&tokens[index].0, tokens[index].1.as_str());
            let value = |at: usize| {
                tokens
                    .get(at + 1)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| LineError {
                        line: *line,
                        message: format!("`{token}` needs a value"),
                    })
            };
            match token {
                "machine" | "default" => {
                    if let Some((machine, user, password)) = current.take() {
                        entries.push((machine, BasicAuth { user, password }));
                    }
                    let machine = if token == "machine" {
                        let name = value(index)?;
                        index += 1;
                        Some(name.to_ascii_lowercase())
                    } else {
                        None
                    };
                    current = Some((machine, String::new(), String::new()));
                }
                "login" => {
                    let user = value(index)?;
                    index += 1;
                    if let Some(entry) = current.as_mut() {
                        entry.1 = user;
                    }
                }
                "password" => {
                    let password = value(index)?;
                    index += 1;
                    if let Some(entry) = current.as_mut() {
                        entry.2 = password;
                    }
                }
                "account" => index += 1,
                other => {
                    return Err(LineError {
                        line: *line,
                        message: format!("unknown token `{other}`"),
                    });
                }
            }
            index += 1;
        }
        if let Some((machine, user, password)) = current.take() {
            entries.push((machine, BasicAuth { user, password }));
        }
        Ok(Self { entries })
    }

    /// The credentials for `host`: its own entry, else the `default` one.
    #[must_use]
    pub fn lookup(&self, host: &str) -> Option<&BasicAuth> {
        let host = host.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(machine, _)| machine.as_deref() == Some(host.as_str()))
            .or_else(|| self.entries.iter().find(|(machine, _)| machine.is_none()))
            .map(|(_, auth)| auth)
            .filter(|auth| !auth.user.is_empty())
    }
}

/// The text with every `macdef` block (from its line to the next empty line) blanked out,
/// keeping the line numbers.
fn without_macros(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_macro = false;
    for line in text.lines() {
        if in_macro && line.trim().is_empty() {
            in_macro = false;
        } else if !in_macro && line.trim_start().starts_with("macdef") {
            in_macro = true;
        }
        if !in_macro {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Whitespace-separated tokens with their line numbers; `"quoted values"` may hold spaces.
fn tokenize(text: &str) -> Vec<(usize, String)> {
    let mut tokens = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let mut chars = line.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            match chars.peek() {
                None => break,
                Some('#') if tokens.last().is_none_or(|(l, _)| *l != number + 1) => break,
                Some('"') => {
                    chars.next();
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '"' => break,
                            '\\' => value.extend(chars.next()),
                            c => value.push(c),
                        }
                    }
                    tokens.push((number + 1, value));
                }
                Some(_) => {
                    let mut value = String::new();
                    while let Some(c) = chars.peek().copied().filter(|c| !c.is_whitespace()) {
                        value.push(c);
                        chars.next();
                    }
                    tokens.push((number + 1, value));
                }
            }
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_machine_then_default() {
        let netrc = Netrc::parse(
            "# mine\nmachine Files.Example.org login alice password \"s3cret word\"\n\
             machine other login bob\n  password hunter2 account x\n\
             macdef init\ncd /pub\nls\n\ndefault login anonymous password me@example.org\n",
        )
        .unwrap();
        let alice = netrc.lookup("files.example.org").unwrap();
        assert_eq!(
            (alice.user.as_str(), alice.password.as_str()),
            ("alice", "s3cret word")
        );
        assert_eq!(netrc.lookup("OTHER").unwrap().password, "hunter2");
        assert_eq!(netrc.lookup("elsewhere").unwrap().user, "anonymous");
        assert!(
            !format!("{alice:?}").contains("s3cret"),
            "never in debug output"
        );
    }

    #[test]
    fn malformed_files_say_where() {
        let error = Netrc::parse("machine a login\n").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(Netrc::parse("machine a frobnicate x").is_err());
        assert!(Netrc::parse("").unwrap().lookup("a").is_none());
    }
}
