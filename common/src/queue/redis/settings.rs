//! What the Redis queue connects to, as the configuration hands it over.

use std::fmt;
use std::str::FromStr;

/// Where the Redis queue lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The single node (not used when `cluster_nodes` is set).
    pub url: String,
    /// Seed nodes of a Redis Cluster: when set, the queue runs on the cluster.
    pub cluster_nodes: Option<ClusterNodes>,
    /// Prefix of every key, so that tenants and tests can share one Redis
    /// (see [`check_key_prefix`]).
    pub key_prefix: String,
}

/// Refuses a url the Redis client cannot use.
pub fn check_url(raw: &str) -> Result<(), String> {
    redis::Client::open(raw)
        .map(|_| ())
        .map_err(|e| format!("not a redis:// url: {e}"))
}

/// Refuses a key prefix with a brace: Redis Cluster hashes the first `{...}`
/// of a key, so a brace in the prefix would put every coupon's keys in the
/// prefix's slot, or split one coupon's keys over several.
pub fn check_key_prefix(raw: &str) -> Result<(), String> {
    if raw.contains(['{', '}']) {
        return Err(format!(
            "{raw:?} contains '{{' or '}}': keys are hash-tagged by coupon id"
        ));
    }
    Ok(())
}

/// Seed nodes of a Redis Cluster: at least one `redis://` url; the client
/// learns the other nodes from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodes(Vec<String>);

impl ClusterNodes {
    pub fn urls(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for ClusterNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl FromStr for ClusterNodes {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let urls: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|u| {
                if !u.starts_with("redis://") {
                    return Err(format!("{u:?} must start with redis://"));
                }
                check_url(u).map(|()| u.to_string())
            })
            .collect::<Result<_, _>>()?;
        if urls.is_empty() {
            return Err("needs at least one redis://host:port".into());
        }
        Ok(Self(urls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_with_braces_are_refused() {
        assert!(check_key_prefix("").is_ok());
        assert!(check_key_prefix("tenant-a:").is_ok());
        for bad in ["{t}:", "a{", "b}"] {
            assert!(check_key_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
