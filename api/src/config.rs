//! Configuration of the api binary.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use common::config::CommonConfig;
use ipnet::IpNet;

use crate::auth::JwtSettings;
use crate::limits::{parse_proxy, LimitSettings};

/// Settings of the api, from flags or the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "api", version, about = "Coupon issuance HTTP api")]
pub struct ApiConfig {
    #[command(flatten)]
    pub common: CommonConfig,

    /// Address to listen on.
    #[arg(
        long,
        env = "API_HOST",
        value_name = "API_HOST",
        default_value = "0.0.0.0"
    )]
    pub host: String,

    /// Port to listen on (0 picks a free one).
    #[arg(
        long,
        env = "API_PORT",
        value_name = "API_PORT",
        default_value_t = 9090
    )]
    pub port: u16,

    /// Bearer token for `/api/admin/*`; without it the admin endpoints refuse every call.
    #[arg(long, env = "ADMIN_TOKEN", value_name = "ADMIN_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub admin_token: Option<String>,

    /// How often the coupon cache (which coupons exist, which are sold out)
    /// is reloaded from MySQL, in milliseconds: a restock by SQL re-opens a
    /// sold-out coupon within this time.
    #[arg(long, env = "COUPON_CACHE_REFRESH_MS", value_name = "COUPON_CACHE_REFRESH_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    pub coupon_cache_refresh_ms: u64,

    /// HS256 secret of user tokens (at least 32 bytes); with it (or
    /// AUTH_JWT_PUBLIC_KEY_FILE) the issue call needs `Authorization: Bearer
    /// <jwt>`. Without either, the api trusts the `userId` of each request.
    #[arg(
        long,
        env = "AUTH_JWT_SECRET",
        value_name = "AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    pub auth_jwt_secret: Option<String>,

    /// PEM public key of user tokens (RSA: RS256; EC P-256: ES256); instead
    /// of AUTH_JWT_SECRET.
    #[arg(
        long,
        env = "AUTH_JWT_PUBLIC_KEY_FILE",
        value_name = "AUTH_JWT_PUBLIC_KEY_FILE"
    )]
    pub auth_jwt_public_key_file: Option<PathBuf>,

    /// Required `iss` of user tokens.
    #[arg(long, env = "AUTH_JWT_ISSUER", value_name = "AUTH_JWT_ISSUER")]
    pub auth_jwt_issuer: Option<String>,

    /// Required `aud` of user tokens.
    #[arg(long, env = "AUTH_JWT_AUDIENCE", value_name = "AUTH_JWT_AUDIENCE")]
    pub auth_jwt_audience: Option<String>,

    /// Issue calls per second (and burst) per user, per api instance; 0 = off.
    #[arg(
        long,
        env = "RATE_LIMIT_PER_USER",
        value_name = "RATE_LIMIT_PER_USER",
        default_value_t = 0
    )]
    pub rate_limit_per_user: u32,

    /// Issue calls per second (and burst) per client IP, per api instance; 0 = off.
    #[arg(
        long,
        env = "RATE_LIMIT_PER_IP",
        value_name = "RATE_LIMIT_PER_IP",
        default_value_t = 0
    )]
    pub rate_limit_per_ip: u32,

    /// Proxies whose `X-Forwarded-For` names the client (comma-separated
    /// IPs or CIDR blocks); empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_name = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<IpNet>,

    /// Apply pending migrations to DATABASE_URL and exit.
    #[arg(long)]
    pub migrate_only: bool,
}

impl ApiConfig {
    pub fn coupon_cache_refresh(&self) -> Duration {
        Duration::from_millis(self.coupon_cache_refresh_ms)
    }

    /// The settings of `crate::auth`.
    pub fn jwt_settings(&self) -> JwtSettings {
        JwtSettings {
            secret: self.auth_jwt_secret.clone(),
            public_key_file: self.auth_jwt_public_key_file.clone(),
            issuer: self.auth_jwt_issuer.clone(),
            audience: self.auth_jwt_audience.clone(),
        }
    }

    /// The settings of `crate::limits`.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            per_user: self.rate_limit_per_user,
            per_ip: self.rate_limit_per_ip,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }
}

fn parse_token(raw: &str) -> Result<String, String> {
    if raw.len() < 8 {
        return Err("must be at least 8 characters".into());
    }
    if !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(raw.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_admin_token_names_the_variable() {
        let err = ApiConfig::try_parse_from(["api", "--admin-token", "x"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ADMIN_TOKEN"), "{err}");
        let err = ApiConfig::try_parse_from(["api", "--port", "99999"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("API_PORT"), "{err}");
    }

    #[test]
    fn the_door_settings_parse_and_a_bad_one_names_its_variable() {
        let config = ApiConfig::try_parse_from([
            "api",
            "--trusted-proxies",
            "10.0.0.0/8, 192.0.2.1,::1",
            "--rate-limit-per-ip",
            "50",
        ])
        .unwrap();
        assert_eq!(config.trusted_proxies.len(), 3);
        assert_eq!(config.limit_settings().per_ip, 50);
        assert_eq!(config.limit_settings().per_user, 0);
        for (variable, value) in [
            ("TRUSTED_PROXIES", "10.0.0.1,proxy"),
            ("RATE_LIMIT_PER_USER", "-1"),
            ("RATE_LIMIT_PER_IP", "many"),
        ] {
            let flag = format!("--{}={value}", variable.to_lowercase().replace('_', "-"));
            let err = ApiConfig::try_parse_from(["api", &flag])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(variable), "{err}");
        }
    }
}
