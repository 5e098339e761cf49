//! Credentials in repository URLs never leave the worker's hands: every
//! place that shows or logs a URL shows this redacted form.

/// Replaces any `user:password@` (or `token@`) in a URL's authority with `***@`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // scp-like `user@host:path` has a user but no password field; keep as is
        // unless it carries a `user:secret@` prefix.
        return redact_authority(url, 0);
    };
    redact_authority(url, scheme_end + 3)
}

fn redact_authority(url: &str, start: usize) -> String {
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) if start > 0 || authority[..at].contains(':') => {
            format!("{}***@{}", &url[..start], &url[start + at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Replaces every occurrence of a URL's credentials inside free text (git's
/// error messages echo the URL they were given).
pub fn redact_text(text: &str, url: &str) -> String {
    let mut out = text.to_string();
    if let Some(secret) = credentials(url) {
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// The `user:password` part of a URL, if any.
pub fn credentials(url: &str) -> Option<&str> {
    let start = url.find("://").map(|i| i + 3)?;
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    authority.rfind('@').map(|at| &authority[..at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_and_password() {
        let table = [
            (
                "https://bob:ghp_secret@github.com/bob/repo.git",
                "https://***@github.com/bob/repo.git",
            ),
            (
                "https://ghp_token@github.com/x/y",
                "https://***@github.com/x/y",
            ),
            (
                "https://github.com/x/y?ref=a@b",
                "https://github.com/x/y?ref=a@b",
            ),
            ("https://github.com/x/y", "https://github.com/x/y"),
            ("/srv/repos/demo", "/srv/repos/demo"),
            ("file:///srv/repos/demo", "file:///srv/repos/demo"),
            ("git@github.com:x/y.git", "git@github.com:x/y.git"),
            ("u:p@host:x/y.git", "***@host:x/y.git"),
            ("https://a:b:c@@host/p", "https://***@host/p"),
        ];
        for (input, want) in table {
            assert_eq!(redact_url(input), want, "input {input}");
        }
    }

    #[test]
    fn redacts_text_that_echoes_the_url() {
        let url = "https://bob:ghp_secret@github.com/bob/repo.git";
        let text = "fatal: could not read from 'https://bob:ghp_secret@github.com/bob/repo.git'";
        let out = redact_text(text, url);
        assert!(!out.contains("ghp_secret"), "{out}");
    }
}
