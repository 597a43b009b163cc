//! Names in a mirror: kept exactly as the source has them (leading dots, trailing dots and
//! spaces included: `.htaccess` and `.well-known/` stay what they are), as long as they are
//! safe. Unlike a name a server suggests for `get` (`naming::sanitize_file_name`), a mirror
//! name is never changed: one that cannot be represented, or that would clash with haul's own
//! working files, is refused and reported as a conflict, never silently altered or dropped.

/// Longest file name accepted, in bytes (the common file-system limit).
const MAX_NAME_BYTES: usize = 255;

/// Why a path cannot be mirrored as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// An empty, `.` or `..` segment.
    Structure,
    /// A NUL or a control character.
    ControlCharacter,
    /// A segment longer than 255 bytes.
    TooLong,
    /// It would be taken for one of haul's own files (`*.part`, `*.part.haul`, the sync
    /// memory file).
    WorkingFile,
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Structure => "an empty, `.` or `..` path segment",
            Self::ControlCharacter => "a NUL or control character",
            Self::TooLong => "a name longer than 255 bytes",
            Self::WorkingFile => "a name haul uses for its own working files",
        })
    }
}

/// Checks a `/`-separated relative path segment by segment; `Ok` with the path unchanged.
///
/// # Errors
/// The first problem found.
pub fn check_mirror_path(path: &str) -> Result<&str, NameProblem> {
    for segment in path.split('/') {
        check_segment(segment)?;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if is_working_file(name) {
        return Err(NameProblem::WorkingFile);
    }
    Ok(path)
}

fn check_segment(segment: &str) -> Result<(), NameProblem> {
    if segment.is_empty() || segment == "." || segment == ".." {
        return Err(NameProblem::Structure);
    }
    if segment.chars().any(char::is_control) {
        return Err(NameProblem::ControlCharacter);
    }
    if segment.len() > MAX_NAME_BYTES {
        return Err(NameProblem::TooLong);
    }
    Ok(())
}

/// Whether `name` is one of haul's own working files (never mirrored, never deleted).
#[must_use]
#[expect(
    clippy::case_sensitive_file_extension_comparisons,
    reason = "haul writes these suffixes itself, in lower case"
)]
pub fn is_working_file(name: &str) -> bool {
    name.starts_with(".haul-sync")
        || name.ends_with(".part")
        || name.ends_with(".part.haul")
        || name.ends_with(".part.haul.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_are_kept_exactly_when_safe() {
        for good in [
            "x.txt",
            ".x.txt",
            "y.txt.",
            ".well-known/.htaccess",
            "a b/ c ",
            "ünïcödé/文件",
            "...hidden",
        ] {
            assert_eq!(check_mirror_path(good), Ok(good), "{good:?}");
        }
    }

    #[test]
    fn unrepresentable_and_clashing_names_are_refused() {
        let cases = [
            ("", NameProblem::Structure),
            ("a//b", NameProblem::Structure),
            ("../x", NameProblem::Structure),
            ("a/./b", NameProblem::Structure),
            ("a\u{0}b", NameProblem::ControlCharacter),
            ("line\nbreak", NameProblem::ControlCharacter),
            ("f.iso.part", NameProblem::WorkingFile),
            ("d/f.part.haul", NameProblem::WorkingFile),
            (".haul-sync.json", NameProblem::WorkingFile),
        ];
        for (bad, problem) in cases {
            assert_eq!(check_mirror_path(bad), Err(problem), "{bad:?}");
        }
        let long = "n".repeat(256);
        assert_eq!(check_mirror_path(&long), Err(NameProblem::TooLong));
    }
}
