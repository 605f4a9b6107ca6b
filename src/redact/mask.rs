//! What of a URL may be shown: the one masking function ([`mask_url`]) that logs, errors,
//! Debug output, `check-config` and `/readyz` go through, and its two uses on text that may
//! carry a URL ([`mask_urls_in`], [`http_error_text`]).

use std::fmt;

/// What replaces a hidden part.
pub const MASK: &str = "****";

/// Query parameters whose value is masked: any whose name contains one of these
/// (case-insensitive), e.g. `password`, `sslpassword`, `access_token`, `api_key`, `sig`,
/// `X-Amz-Signature`, `auth`.
const SECRET_PARAMS: &[&str] = &[
    "pass",
    "token",
    "secret",
    "key",
    "sig",
    "auth",
    "credential",
];

/// What a URL is, which decides how much of it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    /// The state store, commercetools, Checkout, SQS: the user info's password and every
    /// secret-like query parameter are masked; the rest is shown.
    Plain,
    /// A webhook: its path and query are often the credential itself (Slack-style
    /// `/services/T…/B…/TOKEN`, `?token=`), so only `scheme://host:port` is shown.
    Webhook,
}

/// `url` as it may be shown.
///
/// - [`UrlKind::Plain`]: `postgres://u:pw@db/x?password=pw&sslmode=require` →
///   `postgres://u:****@db/x?password=****&sslmode=require`. A URL with nothing to mask comes
///   back exactly as given.
/// - [`UrlKind::Webhook`]: `https://hooks.example.com:8443/services/T/B/X?token=t` →
///   `https://hooks.example.com:8443/****` (user info dropped too).
///
/// Text that is no URL (`10m`, `projects/P/subscriptions/S`) comes back unchanged; text that
/// looks like one but does not parse (`postgres://u:pw@db:port/x`) is shown as `scheme://****`.
pub fn mask_url(url: &str, kind: UrlKind) -> String {
    let parsed = match url::Url::parse(url.trim()) {
        Ok(u) => u,
        Err(_) => return unparsable(url),
    };
    match kind {
        UrlKind::Webhook => {
            let Some(host) = parsed.host_str() else {
                return format!("{}:{MASK}", parsed.scheme());
            };
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let bare = matches!(parsed.path(), "" | "/")
                && parsed.query().is_none()
                && parsed.fragment().is_none();
            let rest = if bare { "/" } else { "/****" };
            format!("{}://{host}{port}{rest}", parsed.scheme())
        }
        // `user:pw@host` without a scheme reads as scheme `user`, path `pw@host`.
        UrlKind::Plain if parsed.host().is_none() && parsed.path().contains('@') => {
            format!("{}:{MASK}", parsed.scheme())
        }
        UrlKind::Plain => {
            let mut masked = parsed;
            let mut changed = false;
            if masked.password().is_some() {
                changed |= masked.set_password(Some(MASK)).is_ok();
            }
            if let Some(query) = masked.query() {
                let mut hid = false;
                let pairs: Vec<String> = query
                    .split('&')
                    .map(|pair| {
                        let name = pair.split('=').next().unwrap_or("");
                        if is_secret_param(name) {
                            hid = true;
                            format!("{name}={MASK}")
                        } else {
                            pair.to_string()
                        }
                    })
                    .collect();
                if hid {
                    masked.set_query(Some(&pairs.join("&")));
                    changed = true;
                }
            }
            if changed {
                masked.to_string()
            } else {
                url.to_string()
            }
        }
    }
}

/// Whether a query parameter's (percent-encoded) name looks like it carries a secret.
fn is_secret_param(name: &str) -> bool {
    let name = percent_decode(name).to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("{s}=").as_bytes())
        .next()
        .map_or_else(|| s.to_string(), |(k, _)| k.into_owned())
}

/// Text [`url::Url`] does not take: unchanged unless it looks like a URL, then only its scheme.
fn unparsable(text: &str) -> String {
    match text.trim().split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
        {
            format!("{scheme}://{MASK}")
        }
        Some(_) => MASK.to_string(),
        None if text.contains('@') && text.contains(':') => MASK.to_string(),
        None => text.to_string(),
    }
}

/// `text` with every URL in it (a word containing `://`) masked as [`UrlKind::Plain`]: for
/// error texts that come from a library and may quote a URL (the store's, shown by `/readyz`).
pub fn mask_urls_in(text: &str) -> String {
    let stop = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '(' | ')' | '<' | '>' | '`');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !stop(c)) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(stop).unwrap_or(rest.len());
        let word = &rest[..end];
        // A URL ends before trailing punctuation (`…/db: connection refused`, `…/db,`).
        let core = word.trim_end_matches([',', ';', ':', '.']);
        if core.contains("://") {
            out.push_str(&mask_url(core, UrlKind::Plain));
            out.push_str(&word[core.len()..]);
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A reqwest error in words, its URL masked as `kind`, with its causes (`connection
/// refused`): reqwest's own text quotes the whole URL.
pub fn http_error_text(e: &reqwest::Error, kind: UrlKind) -> String {
    let hide = |text: String| match e.url() {
        Some(u) => text.replace(u.as_str(), &mask_url(u.as_str(), kind)),
        None => text,
    };
    let mut out = hide(e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = hide(cause.to_string());
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    mask_urls_in(&out)
}

/// Shows a URL masked in `Debug` output.
pub(crate) struct Masked<'a>(pub &'a str, pub UrlKind);

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&mask_url(self.0, self.1), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(u: &str) -> String {
        mask_url(u, UrlKind::Plain)
    }

    fn hook(u: &str) -> String {
        mask_url(u, UrlKind::Webhook)
    }

    #[test]
    fn a_user_info_password_is_masked_and_the_user_kept() {
        assert_eq!(
            plain("postgres://u:hunter2@h:5432/db?sslmode=require"),
            "postgres://u:****@h:5432/db?sslmode=require"
        );
        assert_eq!(
            plain("postgresql://payrules:p%40ss@db.internal/payrules"),
            "postgresql://payrules:****@db.internal/payrules"
        );
        assert_eq!(plain("https://u:pw@h/p"), "https://u:****@h/p");
        // Only a password: the user stays.
        assert_eq!(plain("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn secret_like_query_parameters_are_masked_others_kept() {
        assert_eq!(
            plain("postgres://h/db?password=hunter2"),
            "postgres://h/db?password=****"
        );
        assert_eq!(
            plain("postgres://u:pw@h/db?sslmode=require&PassWord=hunter2&application_name=x"),
            "postgres://u:****@h/db?sslmode=require&PassWord=****&application_name=x"
        );
        for name in [
            "password",
            "sslpassword",
            "access_token",
            "Token",
            "client_secret",
            "api_key",
            "apiKey",
            "signature",
            "X-Amz-Signature",
            "sig",
            "auth",
            "authorization",
            "X-Amz-Credential",
            "pass%77ord",
        ] {
            assert_eq!(
                plain(&format!("https://h/p?a=1&{name}=s3cr3t")),
                format!("https://h/p?a=1&{name}=****"),
                "{name}"
            );
        }
        // A parameter without a value, and a secret one without a value.
        assert_eq!(
            plain("https://h/p?flag&token"),
            "https://h/p?flag&token=****"
        );
    }

    #[test]
    fn a_url_with_nothing_to_mask_is_returned_as_given() {
        for u in [
            "sqlite://payrules.db",
            "sqlite:///var/x.db",
            "sqlite:payrules.db",
            "memory:",
            "https://api.europe-west1.gcp.commercetools.com",
            "https://h/p@q",
            "https://sqs.eu-west-1.amazonaws.com/1/q",
            "postgres://h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        ] {
            assert_eq!(plain(u), u);
        }
    }

    #[test]
    fn text_that_is_no_url_is_unchanged_and_a_broken_url_hidden() {
        for t in [
            "10m",
            "projects/p/subscriptions/s",
            "0.0.0.0:9464",
            "",
            "1h 30m",
        ] {
            assert_eq!(plain(t), t);
            assert_eq!(hook(t), t);
        }
        assert_eq!(plain("postgres://u:hunter2@h:port/db"), "postgres://****");
        assert_eq!(hook("https://h:99999/services/SECRET"), "https://****");
        assert_eq!(plain("://u:hunter2@h"), "****");
        assert_eq!(plain("u:hunter2@h/db"), "u:****");
    }

    #[test]
    fn a_webhook_url_shows_only_scheme_host_and_port() {
        assert_eq!(
            hook("https://hooks.slack.com/services/T000/B000/XXXXSECRET"),
            "https://hooks.slack.com/****"
        );
        assert_eq!(
            hook("http://127.0.0.1:1/services/T000/B000/XXXXSECRET?token=abc"),
            "http://127.0.0.1:1/****"
        );
        assert_eq!(
            hook("https://user:pw@fulfil.example.com:8443/h?sig=1#frag"),
            "https://fulfil.example.com:8443/****"
        );
        assert_eq!(hook("https://[::1]:9000/x"), "https://[::1]:9000/****");
        assert_eq!(
            hook("https://fulfil.example.com"),
            "https://fulfil.example.com/"
        );
        assert_eq!(
            hook("https://fulfil.example.com/?k=v"),
            "https://fulfil.example.com/****"
        );
        assert_eq!(hook("mailto:ops@example.com"), "mailto:****");
    }

    #[test]
    fn urls_inside_text_are_masked() {
        assert_eq!(
            mask_urls_in(
                "connecting to the PostgreSQL state store (postgres://u:pw@h/db?password=hunter2): refused"
            ),
            "connecting to the PostgreSQL state store (postgres://u:****@h/db?password=****): refused"
        );
        assert_eq!(
            mask_urls_in("at \"postgres://h/db?password=hunter2\", then postgres://u:pw@h/db."),
            "at \"postgres://h/db?password=****\", then postgres://u:****@h/db."
        );
        assert_eq!(mask_urls_in("  no url here  "), "  no url here  ");
    }

    #[test]
    fn debug_output_is_masked() {
        assert_eq!(
            format!("{:?}", Masked("postgres://u:pw@h/db", UrlKind::Plain)),
            "\"postgres://u:****@h/db\""
        );
        assert_eq!(
            format!("{:?}", Masked("https://h/services/X", UrlKind::Webhook)),
            "\"https://h/****\""
        );
    }
}
