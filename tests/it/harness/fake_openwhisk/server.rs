//! The HTTP/1.1 server: an accept loop that can be stopped (connections then get
//! ECONNREFUSED) and one task per request, so a fire is handled to the end even if its
//! client goes away, as a real controller would.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::Shared;
use super::controller;

/// A running accept loop and the way to stop it.
pub(super) struct Server {
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `listener` on `runtime` until [`Server::stop`].
    pub fn spawn(
        runtime: &Runtime,
        listener: std::net::TcpListener,
        shared: Arc<Shared>,
    ) -> Server {
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register the listener");
            accept_loop(listener, shared, stop_rx).await;
        });
        Server { stop_tx, task }
    }

    /// Closes the listener and every open connection; requests being handled finish.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(());
        let _ = self.task.await;
    }
}

/// Serves connections until told to stop; then closes the listener and every connection.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop_rx: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop_rx => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |request| {
        // The handler runs in its own task, so a fire is processed to the end even if the
        // client goes away, as a real controller would.
        let handler = tokio::spawn(handle(Arc::clone(&shared), request));
        async move {
            let response = handler.await.expect("fake OpenWhisk handler panicked");
            response.ok_or(ResetConnection)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Answers one request; `None` closes the connection without an answer.
async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Option<Response<Body>> {
    let _in_flight = InFlight::enter(&shared.in_flight);
    let at = SystemTime::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), usize::MAX)
        .await
        .unwrap_or_default();
    controller::route(&shared, &parts, &body, at)
        .await
        .into_response()
}

/// The service error that makes hyper drop the connection without answering.
#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for ResetConnection {}

/// Counts a request as in flight while alive.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
