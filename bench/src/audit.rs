//! `loadgen audit`: the invariant checks of `common::audit` on a sale an
//! operator ran by hand (`scripts/concurrency-test.sh`), printed for people.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use common::audit::{audit_sale, Answers};
use common::domain::CouponId;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct AuditArgs {
    #[arg(long, env = "DATABASE_URL", default_value = common::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,
    #[arg(long)]
    pub coupon: i64,
    /// The coupon's stock when the sale began.
    #[arg(long)]
    pub stock: i64,
    /// Request ids answered `202`, one per line.
    #[arg(long)]
    pub accepted: PathBuf,
    /// Request ids that had a result before the sale began, one per line.
    #[arg(long)]
    pub earlier: Option<PathBuf>,
}

fn ids(path: &Path) -> anyhow::Result<HashSet<Uuid>> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Uuid::parse_str(l.trim()).with_context(|| format!("request id {l:?}")))
        .collect()
}

/// Prints the sale's figures and every broken invariant; false when one
/// broke.
pub async fn audit(args: AuditArgs) -> anyhow::Result<bool> {
    let pool = common::db::pool(&args.database_url, 1).context("DATABASE_URL")?;
    let mut answers = Answers::of_ids(ids(&args.accepted)?);
    if let Some(path) = &args.earlier {
        answers.earlier = ids(path)?;
    }
    let coupon = CouponId::try_from(args.coupon)?;
    let report = audit_sale(&pool, coupon, args.stock, &answers).await?;
    println!("  issued           {}", report.issued);
    println!("  remaining stock  {}", report.remaining_stock);
    println!("  results by status:");
    for (status, n) in &report.by_status {
        println!("    {status:<18} {n}");
    }
    // Check 3 compares the places the clients were told, which a list of
    // request ids does not keep.
    println!("invariants (common::audit):");
    for check in [
        "1 stock: issued = initial - remaining",
        "2 answers: every accepted request has a result, and no other result exists",
        "4 epochs: every result went through its epoch's queue",
        "5 holders: the SUCCESS results are the user_coupon rows (same requests, same users)",
        "6 first-come: every SUCCESS precedes every OUT_OF_STOCK in queue order, \
         every DUPLICATE_REQUEST follows a SUCCESS of its user",
    ] {
        println!("  checked  {check}");
    }
    if report.violations.is_empty() {
        println!("  ok       all hold");
    }
    for v in &report.violations {
        println!("  FAIL     {v}");
    }
    Ok(report.violations.is_empty())
}
