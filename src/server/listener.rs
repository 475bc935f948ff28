//! The accept loop and the life of one connection: a slot among `connections_max` (taken
//! before `accept`, so excess connections wait in the kernel backlog), a slot among the
//! peer's `connections_per_peer_max` (a peer over it is closed at once, so one host cannot
//! take every slot), the TLS handshake (bounded), hyper's HTTP/1.1 + HTTP/2 connection with
//! the listener limits, closing connections that send no first request in time and idle
//! ones, and closing every connection gracefully on shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::front::{Activity, ConnInfo, Front, connection_service};
use super::limits::{CLOSE_GRACE, FIRST_REQUEST_CLOSE_GRACE, TLS_HANDSHAKE_TIMEOUT};
use super::tls::Tls;

/// The connections of a listener, for shutdown.
pub struct Connections {
    slots: Arc<Semaphore>,
    slots_max: u32,
    closing: watch::Sender<bool>,
}

impl Connections {
    /// Asks every connection to finish its requests and close, and waits for them (at most
    /// `grace`). Returns false when some were still open.
    pub async fn close(self, grace: Duration) -> bool {
        self.closing.send_replace(true);
        tokio::time::timeout(grace, self.slots.acquire_many(self.slots_max)).await.is_ok()
    }
}

/// Everything a connection task needs.
#[derive(Clone)]
struct Serving {
    front: Arc<Front>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<Arc<Tls>>,
    idle_timeout: Duration,
    first_request_timeout: Duration,
    closing: watch::Receiver<bool>,
}

/// Open connections per peer, for `connections_per_peer_max`.
#[derive(Clone, Default)]
struct PeerCounts(Arc<Mutex<HashMap<IpAddr, u32>>>);

/// One counted connection of a peer; dropped with the connection.
struct PeerSlot {
    counts: PeerCounts,
    peer: IpAddr,
}

impl PeerCounts {
    /// Counts a new connection of `peer`, or `None` when it already has `max` open.
    fn take(&self, peer: IpAddr, max: u32) -> Option<PeerSlot> {
        let mut counts = self.0.lock();
        let open = counts.entry(peer).or_insert(0);
        if max > 0 && *open >= max {
            return None;
        }
        *open += 1;
        Some(PeerSlot { counts: self.clone(), peer })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock();
        if let Some(open) = counts.get_mut(&self.peer) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Accepts connections until `shutdown` completes, each served on its own task.
pub async fn accept_until(
    listener: &TcpListener,
    front: Arc<Front>,
    tls: Option<Arc<Tls>>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Connections {
    let limits = front.app_limits().clone();
    let slots = Arc::new(Semaphore::new(limits.connections_max as usize));
    let (closing, closing_watch) = watch::channel(false);
    let serving = Serving {
        front,
        builder: Arc::new(super::limits::connection_builder(&limits)),
        tls,
        idle_timeout: limits.idle_timeout,
        first_request_timeout: limits.first_request_timeout,
        closing: closing_watch,
    };
    let peers = PeerCounts::default();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut *shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut *shutdown => break,
        };
        let peer = crate::api::throttle::peer_key(peer.ip());
        let Some(peer_slot) = peers.take(peer, limits.connections_per_peer_max) else {
            // Closed at once; the global slot is free again.
            serving.front.metrics().connections_refused_per_peer.increment(1);
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, (slot, peer_slot), serving.clone()));
    }
    Connections { slots, slots_max: limits.connections_max, closing }
}

async fn serve_connection(stream: TcpStream, peer: IpAddr, _slots: (OwnedSemaphorePermit, PeerSlot), serving: Serving) {
    let metrics = serving.front.metrics().clone();
    metrics.connections.increment(1);
    metrics.connections_open.increment(1.0);
    let _ = stream.set_nodelay(true);
    match serving.tls.clone() {
        None => {
            drive(stream, ConnInfo { client_certificate: false, peer: Some(peer), forwarded: false }, serving).await
        }
        Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => {
                // With a client CA the verifier has checked any certificate presented.
                let client_certificate =
                    tls.verifies_clients() && stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                drive(stream, ConnInfo { client_certificate, peer: Some(peer), forwarded: false }, serving).await;
            }
            Ok(Err(error)) => {
                metrics.tls_handshake_failures.increment(1);
                tracing::debug!(%error, "TLS handshake failed");
            }
            Err(_) => {
                metrics.tls_handshake_failures.increment(1);
                tracing::debug!("TLS handshake timed out");
            }
        },
    }
    metrics.connections_open.decrement(1.0);
}

/// Serves HTTP on `io` until the peer closes, the connection has been idle for
/// `idle_timeout`, or the server shuts down.
async fn drive<I>(io: I, conn: ConnInfo, serving: Serving)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Serving { front, builder, idle_timeout, first_request_timeout, mut closing, .. } = serving;
    let metrics = front.metrics().clone();
    let activity = Arc::new(Activity::new(metrics.clone()));
    let service = TowerToHyperService::new(connection_service(front, conn, activity.clone()));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut closing_asked = false;
    // Set once an idle connection was asked to close: then it is dropped, done or not.
    let mut drop_at: Option<Instant> = None;
    // A connection that has not begun a request by then is closed (slow or silent peers).
    let first_request_by = Instant::now() + first_request_timeout;
    let mut first_request_checked = false;
    if *closing.borrow_and_update() {
        connection.as_mut().graceful_shutdown();
        closing_asked = true;
    }
    loop {
        let idle_check = activity.idle_since().map_or_else(Instant::now, Instant::from_std) + idle_timeout;
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closing.changed(), if !closing_asked => {
                connection.as_mut().graceful_shutdown();
                closing_asked = true;
            }
            () = tokio::time::sleep_until(idle_check), if drop_at.is_none() => {
                let idle = activity.idle_since().is_some_and(|since| since.elapsed() >= idle_timeout);
                if idle {
                    if !closing_asked {
                        connection.as_mut().graceful_shutdown();
                        closing_asked = true;
                    }
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = tokio::time::sleep_until(drop_at.unwrap_or_else(Instant::now)), if drop_at.is_some() => return,
            () = tokio::time::sleep_until(first_request_by), if !first_request_checked => {
                first_request_checked = true;
                if !activity.has_begun() && drop_at.is_none() {
                    // No request to finish: a GOAWAY for HTTP/2 peers, then drop it soon
                    // (a half-sent HTTP/1.1 head would otherwise hold it).
                    metrics.first_request_timeouts.increment(1);
                    if !closing_asked {
                        connection.as_mut().graceful_shutdown();
                        closing_asked = true;
                    }
                    drop_at = Some(Instant::now() + FIRST_REQUEST_CLOSE_GRACE);
                }
            }
        }
    }
}
