//! Reads for the service (summaries, health): a thread that owns a read connection to the
//! store and runs the closures requests send it, so blocking database calls never run on the
//! async workers.

use std::sync::mpsc;

use evalloop_core::store::{self, Store};
use tokio::sync::oneshot;

type Task = Box<dyn FnOnce(&mut dyn Store) + Send>;

/// The handle requests send reads through.
pub struct Reader {
    tx: mpsc::Sender<Task>,
}

impl Reader {
    /// Opens `db` on a thread of its own.
    pub fn start(db: &str) -> crate::Result<Reader> {
        let (tx, rx) = mpsc::channel::<Task>();
        spawn_with_store("reader", db, move |store| {
            for task in rx {
                task(store);
            }
        })?;
        Ok(Reader { tx })
    }

    /// Runs `f` on the reader's connection and returns what it returns.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Store) -> T + Send + 'static,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Box::new(move |s: &mut dyn Store| {
                let _ = tx.send(f(s));
            }))
            .map_err(|_| "the reader thread stopped".to_string())?;
        rx.await.map_err(|_| "the reader thread stopped".to_string())
    }
}

/// Starts thread `evalloop-<name>`, which opens `db` and runs `body` on that connection; returns
/// once the store is open, or with the error that kept it from opening.
pub(crate) fn spawn_with_store(
    name: &str,
    db: &str,
    body: impl FnOnce(&mut dyn Store) + Send + 'static,
) -> crate::Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let db = db.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("evalloop-{name}"))
        .spawn(move || {
            let mut store = match store::open(&db) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            body(store.as_mut());
        })
        .map_err(|e| crate::ServeError::Store(format!("starting the {name} thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => Err(crate::ServeError::Store(e)),
        Err(_) => Err(crate::ServeError::Store(format!("the {name} thread stopped while opening the store"))),
    }
}
