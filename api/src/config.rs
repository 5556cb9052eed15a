//! Configuration of the api binary.

use std::time::Duration;

use clap::Parser;
use common::config::CommonConfig;

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

    /// Apply pending migrations to DATABASE_URL and exit.
    #[arg(long)]
    pub migrate_only: bool,
}

impl ApiConfig {
    pub fn coupon_cache_refresh(&self) -> Duration {
        Duration::from_millis(self.coupon_cache_refresh_ms)
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
}
