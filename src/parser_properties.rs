//! Property tests of every parser that reads what a server, a file or a user hands haul:
//! arbitrary input gives a value or a typed error, never a panic or a hang, and every name a
//! parser accepts passes the safe-name rules of its kind. Case counts are bounded so the
//! normal test run stays fast.

use proptest::prelude::*;

use crate::client::http;
use crate::naming::{content_disposition_name, file_name_from_url, sanitize_file_name};
use crate::sync::names::check_mirror_path;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Text that looks a little like what the parsers expect: their own punctuation is common.
fn noisy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            any::<char>().prop_map(|c| c.to_string()),
            Just("=".to_owned()),
            Just(";".to_owned()),
            Just("\"".to_owned()),
            Just("/".to_owned()),
            Just("..".to_owned()),
            Just("%2F".to_owned()),
            Just("%".to_owned()),
            Just("*".to_owned()),
            Just("'".to_owned()),
            Just("-".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("\n".to_owned()),
            Just("bytes ".to_owned()),
            Just("filename*=UTF-8''".to_owned()),
            Just("filename=".to_owned()),
            Just("<a href=".to_owned()),
            Just("<Key>".to_owned()),
            Just("</Key>".to_owned()),
            Just("<Contents>".to_owned()),
            Just("</Contents>".to_owned()),
            Just("&amp;".to_owned()),
            Just("http://h/".to_owned()),
            Just("0123456789abcdef".to_owned()),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// The rules every name made for `get` obeys.
fn is_safe_get_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
        && !name.starts_with(['.', ' '])
        && !name.ends_with(['.', ' '])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn content_disposition_never_panics_and_only_gives_safe_names(header in noisy()) {
        if let Some(name) = content_disposition_name(&header) {
            prop_assert!(is_safe_get_name(&name), "{name:?} from {header:?}");
        }
    }

    #[test]
    fn sanitized_names_are_safe(name in noisy()) {
        if let Some(clean) = sanitize_file_name(&name) {
            prop_assert!(is_safe_get_name(&clean), "{clean:?} from {name:?}");
        }
    }

    #[test]
    fn url_names_are_safe(path in noisy()) {
        if let Ok(url) = url::Url::parse(&format!("http://h/{path}"))
            && let Ok(name) = file_name_from_url(&url)
        {
            prop_assert!(is_safe_get_name(&name) || name == "index.html", "{name:?}");
        }
    }

    #[test]
    fn content_ranges_are_consistent_when_accepted(value in noisy(), a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        for text in [value.clone(), format!("bytes {a}-{b}/{c}"), format!("bytes {a}-{b}/*")] {
            if let Some(range) = http::parse_content_range(&text) {
                prop_assert!(range.start < range.end);
                prop_assert!(range.total.is_none_or(|total| range.end <= total));
            }
        }
    }

    #[test]
    fn dates_and_retry_after_never_panic(value in noisy(), day in 0u64..40, year in 0u64..100_000) {
        let _ = http::parse_http_date(&value);
        let _ = http::parse_http_date(&format!("Sun, {day} Nov {year} 08:49:37 GMT"));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
            headers.insert(reqwest::header::RETRY_AFTER, v);
            let _ = http::retry_after(&headers);
        }
        let _ = http::unsatisfied_total(&value);
    }

    #[test]
    fn input_files_give_entries_or_numbered_errors(text in noisy()) {
        match crate::input::parse_input(&text) {
            Ok(entries) => {
                for entry in entries {
                    prop_assert!(!entry.urls.is_empty());
                }
            }
            Err(errors) => prop_assert!(errors.iter().all(|e| e.line >= 1)),
        }
    }

    #[test]
    fn sums_files_give_named_checksums_or_numbered_errors(text in noisy()) {
        match crate::integrity::parse_sums(&text) {
            Ok(sums) => prop_assert!(sums.iter().all(|(name, _)| !name.is_empty())),
            Err(errors) => prop_assert!(errors.iter().all(|e| e.line >= 1)),
        }
    }

    #[test]
    fn listings_never_panic_and_keep_to_their_root(body in noisy()) {
        let root = url::Url::parse("http://h/pub/").unwrap();
        let crawled = crate::sync::listing::parse_page_for_tests(&root, "text/html", &body);
        let json = crate::sync::listing::parse_page_for_tests(&root, "application/json", &body);
        let s3 = crate::sync::listing::parse_page_for_tests(&root, "application/xml", &format!("<ListBucketResult>{body}</ListBucketResult>"));
        for page in [crawled, json, s3].into_iter().flatten() {
            for (path, url, _) in page {
                prop_assert!(url.as_str().starts_with("http://h/pub/"), "{url}");
                if let Ok(path) = path {
                    prop_assert!(!path.split('/').any(|s| s.is_empty() || s == ".."), "{path:?}");
                }
            }
        }
    }

    #[test]
    fn mirror_paths_accepted_are_safe(path in noisy()) {
        if check_mirror_path(&path).is_ok() {
            for segment in path.split('/') {
                prop_assert!(!segment.is_empty() && segment != "." && segment != "..");
                prop_assert!(!segment.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn netrc_and_cookie_files_never_panic(text in noisy()) {
        if let Ok(netrc) = crate::client::credentials::Netrc::parse(&text) {
            let _ = netrc.lookup("h");
        }
        if let Ok(jar) = crate::client::cookies::CookieJar::from_netscape(&text) {
            let _ = jar.header_for(&url::Url::parse("http://h/").unwrap());
            let _ = jar.to_netscape();
        }
        let jar = crate::client::cookies::CookieJar::new();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&text) {
            headers.insert(reqwest::header::SET_COOKIE, value);
            jar.store(&url::Url::parse("http://h/a/b").unwrap(), &headers);
        }
    }

    #[test]
    fn checksum_specifications_never_panic(spec in noisy()) {
        let _ = spec.parse::<crate::Checksum>();
    }
}
