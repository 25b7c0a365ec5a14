//! `evalloop serve`: an HTTP service that takes eval logs and human feedback as they happen,
//! validated and deduplicated as `evalloop ingest` does, into the same store.
//!
//! - [`settings`]: the `[serve]` config section and its validated form.
//! - [`keys`]: API keys (stored as hashes) and the token secret, in the store's database.
//! - [`token`]: signed, expiring feedback tokens for browsers.
//! - [`body`]: request bodies (object, array, NDJSON) into validated rows.
//! - [`writer`]: group commit; a 2xx answer means the rows are committed.
//! - [`reader`]: reads off the async workers.
//! - [`app`], [`routes`]: the router, its layers, one handler per route.
//! - [`metrics`], [`openapi`]: `/metrics` and `/v1/openapi.json`.
//! - [`review`]: the review page, where people label annotation queues.

pub mod app;
pub mod body;
pub mod keys;
pub mod metrics;
pub mod openapi;
pub mod reader;
pub mod review;
pub mod routes;
pub mod settings;
pub mod token;
pub mod writer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use evalloop_core::feedback::HumanPolicy;

pub use settings::{ServeSection, ServeSettings};

/// The browser snippet served at `/v1/snippet.js`.
pub const SNIPPET_JS: &str = include_str!("../assets/snippet.js");

/// Errors of the service.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The caller's mistake: a bad key name, an unknown key.
    #[error("{0}")]
    Input(String),
    /// The store's key tables, or opening the store.
    #[error("{0}")]
    Store(String),
    /// Binding the address, the runtime.
    #[error("{0}")]
    Io(String),
}

/// The service's result type.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// What `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The store: a SQLite path or a `postgres://` URL.
    pub db: String,
    /// The human-score policy summaries use.
    pub policy: HumanPolicy,
    pub settings: ServeSettings,
}

/// Runs the service until SIGTERM or Ctrl-C, then stops accepting, answers and commits what is
/// in flight, and returns. `on_listen` gets the bound address (useful with port 0).
pub fn serve(opts: ServeOptions, on_listen: impl FnOnce(SocketAddr)) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("evalloop-http")
        .build()
        .map_err(|e| ServeError::Io(format!("starting the async runtime: {e}")))?;
    let metrics = Arc::new(metrics::Metrics::default());
    let s = &opts.settings;
    let writer = writer::Writer::start(&opts.db, s.group_commit, s.queue_rows, metrics.clone())?;
    let reader = reader::Reader::start(&opts.db)?;
    let mut key_store = keys::KeyStore::open(&opts.db)?;
    let secret = key_store.token_secret()?;
    let state = Arc::new(app::AppState::new(opts.settings.clone(), opts.policy, writer, reader, secret, metrics));
    load_keys(&state, &mut key_store)?;

    let stop = Arc::new(AtomicBool::new(false));
    let refresh = {
        let (state, stop) = (state.clone(), stop.clone());
        let every = opts.settings.key_refresh;
        std::thread::Builder::new()
            .name("evalloop-keys".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(every);
                    if let Err(e) = load_keys(&state, &mut key_store) {
                        tracing::error!("re-reading the API keys: {e} (the previous list stays in force)");
                    }
                }
            })
            .map_err(|e| ServeError::Io(format!("starting the key thread: {e}")))?
    };

    let addr = opts.settings.addr;
    let served = rt.block_on(async {
        // The handlers are installed before the address is announced: a SIGTERM that comes as
        // soon as the service is reachable still stops it cleanly.
        let shutdown = shutdown_signal()?;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| ServeError::Io(format!("binding {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| ServeError::Io(format!("binding {addr}: {e}")))?;
        on_listen(local);
        tracing::info!("listening on http://{local}");
        // The peer address reaches the handlers (the review login's limit is per address).
        let app = app::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| ServeError::Io(format!("serving on {local}: {e}")))
    });
    // Every request has been answered; commit anything still queued and stop.
    state.writer.shutdown();
    stop.store(true, Ordering::SeqCst);
    let _ = refresh.join();
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    tracing::info!("stopped");
    served
}

/// Replaces the service's key list with the store's keys that are not revoked.
fn load_keys(state: &app::AppState, ks: &mut keys::KeyStore) -> Result<()> {
    let fresh: HashMap<String, app::KnownKey> = ks
        .list()?
        .into_iter()
        .filter(|k| k.revoked_at.is_none())
        .map(|k| (k.hash, app::KnownKey { name: k.name, scope: k.scope }))
        .collect();
    *state.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    Ok(())
}

/// Registers the SIGTERM and Ctrl-C handlers now and returns the future that waits for either.
/// Registering here rather than when the future is first polled matters: axum polls it on a
/// worker thread some time after the listener is up, and a signal before that would kill the
/// process instead of stopping it.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let register = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| ServeError::Io(format!("installing the {name} handler: {e}")))
        };
        (register(SignalKind::terminate(), "SIGTERM")?, register(SignalKind::interrupt(), "SIGINT")?)
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: no new connections; finishing the requests in flight");
    })
}
