//! Evens out connections across the worker threads.
//!
//! Each worker accepts from its own `SO_REUSEPORT` listener, and the kernel picks the listener by a hash of
//! the client's address and port, so an even split is luck: of eight benchmark runs of 51 connections, four
//! split 28/23 or worse. A connection stays on the worker that serves it, so the busier worker queues more
//! requests per turn of its event loop, and its clients see the slower answers: at 50 clients the p99 followed
//! the split from one run to the next (docs/benchmarks.md). HAProxy hands a new connection to its least loaded
//! thread, and nginx's workers take turns at one shared listener; here, workers hand connections on.
//!
//! A worker that has accepted a connection keeps it unless another worker serves fewer than it does (keeping it
//! would leave the two at least two apart); then it hands the socket over (deregistered from its own event
//! loop, registered with the other's), so the counts differ by at most one as connections open. A handed
//! connection counts for its new worker from the moment it is sent, so a burst of accepts does not send them
//! all to the same place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A connection handed from one worker to another: the socket, out of any event loop, and its peer.
pub type Handed = (std::net::TcpStream, SocketAddr);

/// The workers' connection counts and their inboxes, shared by all of them.
pub struct Balancer {
    open: Vec<AtomicUsize>,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

/// One worker's side: its index, and the connections handed to it. A connection still in the inbox when its
/// worker stops is closed with it, as one left in a listener's backlog is.
pub struct Inbox {
    pub worker: usize,
    pub handed: mpsc::UnboundedReceiver<Handed>,
}

impl Balancer {
    /// A balancer for `workers` workers, and each worker's inbox.
    pub fn new(workers: usize) -> (Arc<Self>, Vec<Inbox>) {
        let (inboxes, handed): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let balancer = Arc::new(Self {
            open: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            inboxes,
        });
        let inboxes = handed
            .into_iter()
            .enumerate()
            .map(|(worker, handed)| Inbox { worker, handed })
            .collect();
        (balancer, inboxes)
    }

    /// Places a connection `worker` has just accepted: `Some` gives it back to serve, `None` means another
    /// worker has it now.
    pub fn place(
        self: &Arc<Self>,
        worker: usize,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TcpStream, Served)> {
        let counts: Vec<usize> = self
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        if let Some(to) = elsewhere(&counts, worker) {
            // Counted for the new worker before it is sent, so the next accept already sees it there.
            self.open[to].fetch_add(1, Ordering::Relaxed);
            match stream.into_std() {
                Ok(socket) => match self.inboxes[to].send((socket, peer)) {
                    Ok(()) => return None,
                    // That worker has stopped: the connection is served here after all.
                    Err(mpsc::error::SendError((socket, _))) => {
                        self.open[to].fetch_sub(1, Ordering::Relaxed);
                        return TcpStream::from_std(socket)
                            .ok()
                            .map(|stream| (stream, self.serve(worker)));
                    }
                },
                Err(_) => {
                    // Deregistering failed: the socket is gone with it, as a reset before accept would be.
                    self.open[to].fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        Some((stream, self.serve(worker)))
    }

    /// Takes up a connection handed to `worker` (already counted for it).
    pub fn take(
        self: &Arc<Self>,
        worker: usize,
        handed: Handed,
    ) -> Option<(TcpStream, SocketAddr, Served)> {
        let (socket, peer) = handed;
        let served = Served::new(self, worker);
        TcpStream::from_std(socket)
            .ok()
            .map(|stream| (stream, peer, served))
    }

    /// Counts a connection for `worker`, which serves it where it arrived.
    fn serve(self: &Arc<Self>, worker: usize) -> Served {
        self.open[worker].fetch_add(1, Ordering::Relaxed);
        Served::new(self, worker)
    }
}

/// A connection counted for its worker while it is open.
pub struct Served {
    balancer: Arc<Balancer>,
    worker: usize,
}

impl Served {
    fn new(balancer: &Arc<Balancer>, worker: usize) -> Self {
        Self {
            balancer: balancer.clone(),
            worker,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.balancer.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The worker a connection accepted by `worker` goes to instead: the one serving the fewest, when that is fewer
/// than `worker` serves.
fn elsewhere(counts: &[usize], worker: usize) -> Option<usize> {
    let mine = *counts.get(worker)?;
    let (to, fewest) = counts
        .iter()
        .copied()
        .enumerate()
        .min_by_key(|&(_, count)| count)?;
    (fewest < mine).then_some(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::AsyncWriteExt;

    fn counts(balancer: &Balancer) -> Vec<usize> {
        balancer
            .open
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Every connection arrives at worker 0, as the kernel's hash can send a run of them to one listener: half
    /// are handed to worker 1, whose event loop then serves them (bytes written through a handed socket reach
    /// its client); a closed connection frees its place; a stopped worker's share is served where it arrived.
    #[tokio::test]
    async fn connections_that_all_arrive_at_one_worker_are_split_evenly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (balancer, mut inboxes) = Balancer::new(2);
        let mut clients = Vec::new();
        async fn arrive(
            listener: &tokio::net::TcpListener,
            balancer: &Arc<Balancer>,
            clients: &mut Vec<std::net::TcpStream>,
        ) -> Option<(TcpStream, Served)> {
            let addr = listener.local_addr().expect("address");
            let client = std::net::TcpStream::connect(addr).expect("connect");
            let (stream, peer) = listener.accept().await.expect("accept");
            assert_eq!(peer, client.local_addr().expect("client address"));
            clients.push(client);
            balancer.place(0, stream, peer)
        }
        let mut kept = Vec::new();
        for _ in 0..6 {
            kept.extend(arrive(&listener, &balancer, &mut clients).await);
        }
        assert_eq!((kept.len(), counts(&balancer)), (3, vec![3, 3]));

        let mut handed = Vec::new();
        while let Ok(one) = inboxes[1].handed.try_recv() {
            handed.push(balancer.take(1, one).expect("registered with this runtime"));
        }
        assert_eq!(handed.len(), 3);
        let (stream, peer, _served) = &mut handed[0];
        stream.write_all(b"handed").await.expect("write");
        let client = clients
            .iter_mut()
            .find(|c| c.local_addr().ok() == Some(*peer))
            .expect("the handed connection's client");
        let mut read = [0u8; 6];
        client.read_exact(&mut read).expect("read");
        assert_eq!(&read, b"handed");

        drop(kept.pop());
        assert_eq!(counts(&balancer), vec![2, 3]);
        kept.extend(arrive(&listener, &balancer, &mut clients).await);
        assert_eq!(
            counts(&balancer),
            vec![3, 3],
            "kept: worker 0 was not ahead"
        );

        drop(inboxes.pop());
        kept.extend(arrive(&listener, &balancer, &mut clients).await);
        kept.extend(arrive(&listener, &balancer, &mut clients).await);
        assert_eq!(
            (kept.len(), counts(&balancer)),
            (5, vec![5, 3]),
            "worker 1 stopped: served by worker 0"
        );
        drop(kept);
        drop(handed);
        assert_eq!(counts(&balancer), vec![0, 0]);
    }

    #[test]
    fn a_connection_moves_only_to_a_worker_serving_fewer() {
        assert_eq!(elsewhere(&[3, 2], 0), Some(1));
        assert_eq!(elsewhere(&[3, 3], 0), None);
        assert_eq!(elsewhere(&[2, 3], 0), None);
        assert_eq!(elsewhere(&[0, 0, 0], 1), None);
        assert_eq!(elsewhere(&[5, 4, 1], 1), Some(2));
        assert_eq!(elsewhere(&[1, 1, 1], 2), None);
        assert_eq!(elsewhere(&[4], 0), None);
        assert_eq!(elsewhere(&[], 0), None);
    }
}
