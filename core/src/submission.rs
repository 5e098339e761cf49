//! The seed's contract ("Nuestro contrato"), validated: what a user may submit
//! and the one place that says what is wrong with it.
//!
//! `{"url": string, "args"?: string | [string], "config"?: string | object,
//!   "timeout_secs"?: int, "limits"?: {"memory_mb"?, "cpus"?, "pids"?,
//!   "log_limit_bytes"?, "output_limit_bytes"?, "output_max_files"?}}`

use serde_json::{Map, Value};

use crate::job::JobLimits;

/// The limits a submission is checked against (from the configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    pub default_timeout_secs: u64,
    pub max_timeout_secs: u64,
    pub repos: RepoPolicy,
    /// The worker's limits: what a job asks for must not be above them.
    pub ceilings: Ceilings,
}

/// The worker's limits (`worker.*`), the ceiling of a job's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Ceilings {
    pub memory_mb: u64,
    pub cpus: f64,
    pub pids: u64,
    pub log_limit_bytes: u64,
    pub output_limit_bytes: u64,
    pub output_max_files: u64,
}

/// Which repository URLs are accepted.
#[derive(Debug, Clone)]
pub struct RepoPolicy {
    /// URL schemes accepted, e.g. `https`. `file` also admits `file://` URLs.
    pub allowed_schemes: Vec<String>,
    /// Accept absolute local paths and `file://` URLs (standalone mode).
    pub allow_local: bool,
}

/// A valid submission.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub url: String,
    pub args: Vec<String>,
    pub config: Option<String>,
    pub timeout_secs: u64,
    pub limits: JobLimits,
    /// Where to POST the record when the job ends (checked against the
    /// webhook rules by the frontend, which can resolve names).
    pub callback_url: Option<String>,
}

/// Why a submission was refused: the field and a sentence for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SubmissionError {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> SubmissionError {
    SubmissionError {
        field,
        message: message.into(),
    }
}

const MAX_URL_LEN: usize = 2048;
const MAX_ARGS: usize = 1024;
const MAX_ARGS_BYTES: usize = 128 * 1024;

impl JobSpec {
    /// Validates a parsed JSON body.
    pub fn from_json(body: &Value, limits: &Limits) -> Result<Self, SubmissionError> {
        let Value::Object(map) = body else {
            return Err(invalid("body", "expected a JSON object"));
        };
        reject_unknown_fields(map)?;
        let url = match map.get("url") {
            Some(Value::String(s)) => s.trim().to_string(),
            None | Some(Value::Null) => return Err(invalid("url", "is required")),
            Some(_) => return Err(invalid("url", "must be a string")),
        };
        check_repo_url(&url, &limits.repos).map_err(|m| invalid("url", m))?;
        let args = match map.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(line)) => shell_words::split(line)
                .map_err(|e| invalid("args", format!("cannot split into words: {e}")))?,
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid("args", "every item must be a string")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("args", "must be a string or a list of strings")),
        };
        check_args(&args)?;
        let config = match map.get("config") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
            Some(_) => return Err(invalid("config", "must be a string or a JSON object")),
        };
        let timeout_secs = match map.get("timeout_secs") {
            None | Some(Value::Null) => limits.default_timeout_secs,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(t) if t >= 1 && t <= limits.max_timeout_secs => t,
                _ => {
                    return Err(invalid(
                        "timeout_secs",
                        format!(
                            "must be a whole number from 1 to {}",
                            limits.max_timeout_secs
                        ),
                    ))
                }
            },
            Some(_) => return Err(invalid("timeout_secs", "must be a whole number")),
        };
        let callback_url = match map.get("callback_url") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(_) => return Err(invalid("callback_url", "must be a string")),
        };
        let limits = match map.get("limits") {
            None | Some(Value::Null) => JobLimits::default(),
            Some(Value::Object(m)) => parse_limits(m, &limits.ceilings)?,
            Some(_) => return Err(invalid("limits", "must be a JSON object")),
        };
        Ok(Self {
            url,
            args,
            config,
            timeout_secs,
            limits,
            callback_url,
        })
    }
}

/// `limits`: each a number from its floor to the worker's own limit.
fn parse_limits(map: &Map<String, Value>, max: &Ceilings) -> Result<JobLimits, SubmissionError> {
    const KNOWN: [&str; 6] = [
        "memory_mb",
        "cpus",
        "pids",
        "log_limit_bytes",
        "output_limit_bytes",
        "output_max_files",
    ];
    if let Some(k) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(invalid(
            "limits",
            format!("unknown limit `{k}`; expected {}", KNOWN.join(", ")),
        ));
    }
    let whole = |key: &'static str,
                 floor: u64,
                 ceiling: u64|
     -> Result<Option<u64>, SubmissionError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (floor..=ceiling).contains(&n) => Ok(Some(n)),
                _ => Err(invalid(
                    "limits",
                    format!("{key} must be a whole number from {floor} to {ceiling} (the worker's worker.{key})"),
                )),
            },
        }
    };
    let cpus = match map.get("cpus") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(c) if (0.01..=max.cpus).contains(&c) => Some(c),
            _ => {
                return Err(invalid(
                    "limits",
                    format!(
                        "cpus must be a number from 0.01 to {} (the worker's worker.cpus)",
                        max.cpus
                    ),
                ))
            }
        },
    };
    Ok(JobLimits {
        memory_mb: whole("memory_mb", 16, max.memory_mb)?,
        cpus,
        pids: whole("pids", 8, max.pids)?,
        log_limit_bytes: whole("log_limit_bytes", 1024, max.log_limit_bytes)?,
        output_limit_bytes: whole("output_limit_bytes", 0, max.output_limit_bytes)?,
        output_max_files: whole("output_max_files", 1, max.output_max_files)?,
    })
}

fn reject_unknown_fields(map: &Map<String, Value>) -> Result<(), SubmissionError> {
    const KNOWN: [&str; 6] = [
        "url",
        "args",
        "config",
        "timeout_secs",
        "limits",
        "callback_url",
    ];
    match map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        Some(k) => Err(invalid(
            "body",
            format!(
                "unknown field `{k}`; expected url, args, config, timeout_secs, limits, callback_url"
            ),
        )),
        None => Ok(()),
    }
}

fn check_args(args: &[String]) -> Result<(), SubmissionError> {
    if args.len() > MAX_ARGS {
        return Err(invalid("args", format!("at most {MAX_ARGS} arguments")));
    }
    if args.iter().map(String::len).sum::<usize>() > MAX_ARGS_BYTES {
        return Err(invalid(
            "args",
            format!("at most {MAX_ARGS_BYTES} bytes in all"),
        ));
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("args", "must not contain NUL characters"));
    }
    Ok(())
}

/// Where a repository URL points, once accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// `scheme://...` with an allowed scheme.
    Remote { scheme: String },
    /// An absolute local path or a `file://` URL.
    Local,
}

/// Checks a repository URL against the policy. The error is a sentence for
/// the user; it never echoes the URL (which may hold credentials).
pub fn check_repo_url(url: &str, policy: &RepoPolicy) -> Result<RepoLocation, String> {
    if url.is_empty() {
        return Err("is required".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".into());
    }
    if url.starts_with('-') {
        return Err("must not start with `-`".into());
    }
    if url.starts_with('/') {
        return if policy.allow_local {
            Ok(RepoLocation::Local)
        } else {
            Err("local paths are not accepted here".into())
        };
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "must be a URL with one of the schemes: {}",
            allowed_list(policy)
        ));
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
        || scheme.contains("::")
    {
        return Err("has an invalid scheme".into());
    }
    if scheme == "file" {
        return if policy.allow_local && rest.starts_with('/') {
            Ok(RepoLocation::Local)
        } else {
            Err("file:// URLs are not accepted here".into())
        };
    }
    if !policy.allowed_schemes.iter().any(|s| s == &scheme) {
        return Err(format!(
            "scheme `{scheme}` is not accepted; allowed: {}",
            allowed_list(policy)
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with('-') {
        return Err("has no host".into());
    }
    Ok(RepoLocation::Remote { scheme })
}

fn allowed_list(policy: &RepoPolicy) -> String {
    let mut names: Vec<&str> = policy.allowed_schemes.iter().map(String::as_str).collect();
    if policy.allow_local {
        names.push("file (and absolute paths)");
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits(allow_local: bool) -> Limits {
        Limits {
            default_timeout_secs: 600,
            max_timeout_secs: 3600,
            repos: RepoPolicy {
                allowed_schemes: vec!["https".into()],
                allow_local,
            },
            ceilings: Ceilings {
                memory_mb: 2048,
                cpus: 2.0,
                pids: 512,
                log_limit_bytes: 1 << 20,
                output_limit_bytes: 1 << 30,
                output_max_files: 1000,
            },
        }
    }

    #[test]
    fn a_job_may_lower_its_limits() {
        let spec = JobSpec::from_json(
            &json!({"url": "https://x/r", "limits": {"memory_mb": 64, "cpus": 0.25, "output_max_files": 3}}),
            &limits(false),
        )
        .unwrap();
        assert_eq!(spec.limits.memory_mb, Some(64));
        assert_eq!(spec.limits.cpus, Some(0.25));
        assert_eq!(spec.limits.output_max_files, Some(3));
        assert_eq!(spec.limits.pids, None);
        let table = [
            (
                json!({"memory_mb": 4096}),
                "memory_mb must be a whole number from 16 to 2048",
            ),
            (json!({"memory_mb": 8}), "memory_mb"),
            (json!({"cpus": 3}), "cpus must be a number from 0.01 to 2"),
            (json!({"cpus": "1"}), "cpus"),
            (json!({"pids": 1.5}), "pids"),
            (json!({"swap": 1}), "unknown limit `swap`"),
            (json!(5), "must be a JSON object"),
        ];
        for (l, message) in table {
            let err =
                JobSpec::from_json(&json!({"url": "https://x/r", "limits": l}), &limits(false))
                    .unwrap_err();
            assert_eq!(err.field, "limits");
            assert!(err.message.contains(message), "{l}: {}", err.message);
        }
    }

    #[test]
    fn accepts_the_contract_shapes() {
        let spec = JobSpec::from_json(
            &json!({"url": "https://example.com/r.git", "args": "a 'b c' \"$(x)\"", "config": {"k": 1}}),
            &limits(false),
        )
        .unwrap();
        assert_eq!(spec.args, vec!["a", "b c", "$(x)"]);
        assert_eq!(spec.config.as_deref(), Some(r#"{"k":1}"#));
        assert_eq!(spec.timeout_secs, 600);

        let spec = JobSpec::from_json(
            &json!({"url": "/srv/r", "args": ["; touch X", "`id`"], "config": "raw text", "timeout_secs": 5}),
            &limits(true),
        )
        .unwrap();
        assert_eq!(spec.args, vec!["; touch X", "`id`"]);
        assert_eq!(spec.config.as_deref(), Some("raw text"));
        assert_eq!(spec.timeout_secs, 5);
    }

    #[test]
    fn refuses_bad_fields_with_the_field_named() {
        let table = [
            (json!([1, 2]), "body"),
            (json!({}), "url"),
            (json!({"url": 5}), "url"),
            (json!({"url": ""}), "url"),
            (json!({"url": "https://x/r", "args": 5}), "args"),
            (json!({"url": "https://x/r", "args": [1]}), "args"),
            (
                json!({"url": "https://x/r", "args": "unterminated 'quote"}),
                "args",
            ),
            (json!({"url": "https://x/r", "config": 5}), "config"),
            (
                json!({"url": "https://x/r", "timeout_secs": 0}),
                "timeout_secs",
            ),
            (
                json!({"url": "https://x/r", "timeout_secs": 99999}),
                "timeout_secs",
            ),
            (
                json!({"url": "https://x/r", "timeout_secs": "5"}),
                "timeout_secs",
            ),
            (
                json!({"url": "https://x/r", "timeout_secs": 1.5}),
                "timeout_secs",
            ),
            (json!({"url": "https://x/r", "colour": "red"}), "body"),
        ];
        for (body, field) in table {
            let err = JobSpec::from_json(&body, &limits(false)).unwrap_err();
            assert_eq!(err.field, field, "body {body}");
        }
    }

    #[test]
    fn repository_urls_follow_the_policy() {
        let prod = limits(false).repos;
        let local = limits(true).repos;
        let table: [(&str, bool, bool); 12] = [
            ("https://github.com/x/y.git", true, true),
            ("https://user:tok@github.com/x/y.git", true, true),
            ("http://github.com/x/y.git", false, false),
            ("/srv/repo", false, true),
            ("file:///srv/repo", false, true),
            ("-uevil", false, false),
            ("--upload-pack=touch /tmp/x", false, false),
            ("ext::sh -c touch% /tmp/pwned", false, false),
            ("ext::sh", false, false),
            ("git@github.com:x/y.git", false, false),
            ("https://-oProxyCommand=x/y", false, false),
            ("relative/path", false, false),
        ];
        for (url, ok_prod, ok_local) in table {
            assert_eq!(check_repo_url(url, &prod).is_ok(), ok_prod, "prod {url}");
            assert_eq!(check_repo_url(url, &local).is_ok(), ok_local, "local {url}");
        }
    }

    #[test]
    fn errors_never_echo_credentials() {
        let err = check_repo_url("ftp://user:sekret@host/x", &limits(false).repos).unwrap_err();
        assert!(!err.contains("sekret"), "{err}");
    }
}
