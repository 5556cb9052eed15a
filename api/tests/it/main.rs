//! The api's tests against real MariaDB and Redis, one test binary.

mod dashboard;
mod docs;
mod door;
mod http;
mod lookup;
mod shutdown;
mod switch;

use common::domain::QueueType;
use testkit::TestApp;

pub use testkit::ADMIN_TOKEN as TOKEN;

/// The api in Redis mode on a free port, with its own database and prefix.
pub async fn spawn_app() -> TestApp {
    testkit::spawn_app(QueueType::Redis).await
}

/// Every `src="..."` and `href="..."` of an HTML page.
pub fn links(html: &str) -> Vec<String> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}
