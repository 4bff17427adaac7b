/// A shared job's name (`--job`), checked: it becomes part of Redis keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobName(String);

impl JobName {
    /// Letters, digits, `.`, `_` and `-`, 1 to 100 of them.
    pub fn parse(name: &str) -> Result<JobName, super::JobError> {
        let invalid = |reason| super::JobError::InvalidName {
            name: name.chars().take(120).collect(),
            reason,
        };
        if name.is_empty() || name.len() > 100 {
            return Err(invalid("a job name has 1 to 100 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "a job name has only letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(JobName(name.to_string()))
    }

    /// The name a job gets from its input's fingerprint when `--job` is not given.
    pub fn from_fingerprint(fingerprint: &str) -> JobName {
        let short: String = fingerprint
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        JobName(format!("input-{short}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Redis keys of one job. The name is in braces (a hash tag), so a
/// job's keys would all live on one node of a cluster, as its scripts need.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub meta: String,
    pub work: String,
    pub requests: String,
    pub results: String,
    pub deliveries: String,
    pub errors: String,
    pub loader: String,
}

impl Keys {
    pub fn new(name: &JobName) -> Keys {
        let k = |what: &str| format!("pacer:job:v1:{{{}}}:{what}", name.0);
        Keys {
            meta: k("meta"),
            work: k("work"),
            requests: k("requests"),
            results: k("results"),
            deliveries: k("deliveries"),
            errors: k("errors"),
            loader: k("loader"),
        }
    }

    /// The keys a finished job keeps (and lets expire).
    pub fn all(&self) -> [&str; 6] {
        [
            &self.meta,
            &self.results,
            &self.work,
            &self.requests,
            &self.deliveries,
            &self.errors,
        ]
    }
}

/// The consumer group every worker of a job reads from.
pub(crate) const GROUP: &str = "workers";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_become_keys() {
        assert!(JobName::parse("ocr-2026.12_a").is_ok());
        for bad in ["", "a b", "x}y", "ä", &"n".repeat(101), "a:b", "a*"] {
            let err = JobName::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("--job "), "{bad}: {err}");
        }
    }

    #[test]
    fn every_key_of_a_job_shares_one_hash_tag() {
        let keys = Keys::new(&JobName::parse("j1").unwrap());
        for k in keys.all().iter().chain([&keys.loader.as_str()]) {
            assert!(k.starts_with("pacer:job:v1:{j1}:"), "{k}");
        }
    }

    #[test]
    fn a_name_from_a_fingerprint_is_a_valid_name() {
        let n = JobName::from_fingerprint("0123456789abcdef0123");
        assert_eq!(n.as_str(), "input-0123456789abcdef");
        assert!(JobName::parse(n.as_str()).is_ok());
    }
}
