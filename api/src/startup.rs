//! Builds the api (pool, migrations, queue, cache, router) and runs it.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use common::backoff::Backoff;
use common::queue::{Producer, Queues};
use common::{db, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::active_queue::ActiveQueue;
use crate::auth::Auth;
use crate::cache::CouponCache;
use crate::config::ApiConfig;
use crate::held::Held;
use crate::limits::Limits;
use crate::routes::router;
use crate::state::{AppState, Shared};
use crate::waiting::Waitings;

/// A built api, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    background: CancellationToken,
    cache_refresh: std::time::Duration,
}

impl Application {
    /// Connects to MySQL, applies migrations (refusing a schema newer than
    /// this build), loads the coupon cache, prepares the queue producer and
    /// binds the listener.
    pub async fn build(config: ApiConfig) -> anyhow::Result<Self> {
        // Settings first: a bad one stops start-up before any connection.
        let auth = Auth::new(&config.jwt_settings())?;
        if !auth.required() {
            tracing::warn!(
                "no AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE: the api trusts the userId of \
                 each request (a gateway in front must authenticate users)"
            );
        }
        let limits = Limits::new(&config.limit_settings());
        let pool = db::pool(&config.common.database_url, 32).context("DATABASE_URL")?;
        db::migrate(&pool)
            .await
            .context("applying migrations to DATABASE_URL")?;
        let coupons = CouponCache::new(pool.clone());
        coupons.reload().await.context("loading coupon ids")?;
        let queues = Queues::new(config.common.queue_settings());
        let queue = ActiveQueue::start(
            pool.clone(),
            queues,
            config.common.queue_type,
            config.common.queue_fallback,
        )
        .await
        .context("reading the active queue and preparing its producer")?;
        let background = CancellationToken::new();
        let addr = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding API_HOST:API_PORT {addr}"))?;
        Ok(Self {
            listener,
            state: AppState::new(Shared {
                held: Held::new(pool.clone()),
                pool,
                waiting: Waitings::new(background.clone()),
                queue,
                coupons,
                admin_token: config.admin_token.as_deref().map(Into::into),
                metrics: telemetry::metrics_handle(),
                activity: Default::default(),
                auth,
                limits,
            }),
            background,
            cache_refresh: config.coupon_cache_refresh(),
        })
    }

    /// The address actually bound (port 0 becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves on a background task until the returned token is cancelled;
    /// returns the bound address. For tests and embedding.
    pub fn spawn(self) -> (SocketAddr, CancellationToken) {
        let addr = self.local_addr();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(self.run_until(async move { stopped.cancelled().await }));
        (addr, stop)
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests
    /// and stops accepting new ones.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let refresher = self.state.coupons.spawn_refresher(
            self.cache_refresh,
            self.state.queue.queues().clone(),
            self.background.clone(),
        );
        let topics = spawn_topic_creation(self.state.queue.producer(), self.background.clone());
        let follower = self.state.queue.spawn_follower(self.background.clone());
        let lookups = self.state.held.spawn_lookups(self.background.clone());
        let sweeper = self.state.limits.spawn_sweeper(self.background.clone());
        let queue = self.state.queue.clone();
        let waiting = self.state.waiting.clone();
        let held = self.state.held.clone();
        // Held lookups answer at once when the shutdown starts, so the
        // drain does not wait for them; their look-ups run until it is over.
        let shutdown = async move {
            shutdown.await;
            held.close();
        };
        tracing::info!(addr = %self.local_addr(), "api listening");
        // The peer's address reaches the handlers (`ConnectInfo`) for the
        // per-IP limit.
        let app = router(self.state).into_make_service_with_connect_info::<SocketAddr>();
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.background.cancel();
        let _ = tokio::join!(
            refresher,
            topics,
            follower,
            lookups,
            sweeper,
            waiting.stopped()
        );
        // Every request in flight was answered: this api enqueues nothing more.
        queue.leave().await;
        result.context("serving http")
    }
}

/// Creates missing Kafka topics, retrying in the background while the broker
/// is down so the api can start (and answer 503) without it.
fn spawn_topic_creation(
    producer: Producer,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(2);
        let mut backoff = Backoff::new(every, every);
        loop {
            match producer.ensure_topics().await {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = ?e, "creating topics failed; retrying"),
            }
            if !backoff.wait(&cancel).await {
                return;
            }
        }
    })
}
