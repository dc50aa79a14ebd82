//! What the test servers share: a listener that can be stopped and started
//! again on its port ([`Listening`]), and the list of what a server took,
//! which a test can wait on ([`Recorded`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What a server took, in arrival order.
pub(crate) struct Recorded<T> {
    items: Mutex<Vec<T>>,
    arrived: Notify,
}

impl<T> Default for Recorded<T> {
    fn default() -> Self {
        Self {
            items: Mutex::new(Vec::new()),
            arrived: Notify::new(),
        }
    }
}

impl<T: Clone> Recorded<T> {
    pub(crate) fn push(&self, item: T) {
        self.items.lock().expect("not poisoned").push(item);
        self.arrived.notify_waiters();
    }

    pub(crate) fn all(&self) -> Vec<T> {
        self.items.lock().expect("not poisoned").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.items.lock().expect("not poisoned").len()
    }

    /// Waits until at least `n` arrived, or `within` passed; answers what
    /// arrived either way.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Registered before the count is read, so an arrival in
            // between still wakes it.
            let arrived = self.arrived.notified();
            if self.count() >= n {
                break;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                break;
            }
        }
        self.all()
    }
}

/// How a listener serves: a task over the bound listener.
pub(crate) type Serve =
    Box<dyn Fn(TcpListener) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A listener serving with `serve` until stopped; dropping it stops it.
pub(crate) struct Listening {
    addr: SocketAddr,
    serve: Serve,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Listening {
    /// Binds `addr` (port 0: a free one) and serves.
    pub(crate) async fn bind(addr: SocketAddr, serve: Serve) -> std::io::Result<Self> {
        let mut listening = Listening {
            addr,
            serve,
            task: None,
        };
        listening.resume().await?;
        Ok(listening)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening; `serve`'s task is aborted with every connection it
    /// holds ([`accept_loop`]).
    pub(crate) fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn resume(&mut self) -> std::io::Result<()> {
        if self.task.is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            self.addr = listener.local_addr()?;
            self.task = Some(tokio::spawn((self.serve)(listener)));
        }
        Ok(())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until aborted, each handled by `handle` in a task
/// of its own; aborting drops the set, which aborts every connection.
pub(crate) async fn accept_loop<H, F>(listener: TcpListener, handle: H)
where
    H: Fn(tokio::net::TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(handle(stream));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
