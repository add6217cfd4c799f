//! The TCP process group: CPU ranks started by `tmca launch`, no MPI library needed. The
//! ranks form a ring (rank r sends to r+1, receives from r−1) and run the ring algorithms:
//! all-reduce as reduce-scatter then all-gather of R chunks (each chunk is summed once, by one
//! rank, so every rank ends with bit-identical values), all-gather as R−1 passes of blocks.
//! Every message carries its length, so ranks that disagree on a collective's size fail with
//! a message instead of misreading the stream.

use crate::store::StoreClient;
use crate::WorkerError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tmca_trainer::sync::GradSync;
use tmca_trainer::TrainError;

/// Values that travel on the ring.
trait Wire: Copy + Default + Send + Sync {
    const SIZE: usize;
    fn put(self, out: &mut [u8]);
    fn get(bytes: &[u8]) -> Self;
    fn add(self, other: Self) -> Self;
}

macro_rules! wire {
    ($t:ty) => {
        impl Wire for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
            fn add(self, other: Self) -> Self {
                self + other
            }
        }
    };
}
wire!(f32);
wire!(f64);
wire!(u64);

/// Seconds a rank waits for its peers in a collective before it fails (default
/// [`COLLECTIVE_TIMEOUT`]): long enough for rank 0 to write a large checkpoint or generate
/// data while the others wait. The TCP ring's sockets time out; MPI's and NCCL's collectives
/// are watched ([`crate::watchdog`]).
pub const COLLECTIVE_TIMEOUT_VAR: &str = "TMCA_COLLECTIVE_TIMEOUT";

/// The default of [`COLLECTIVE_TIMEOUT_VAR`]: 30 minutes (PyTorch's NCCL default is 10).
pub const COLLECTIVE_TIMEOUT: Duration = Duration::from_secs(1800);

/// One rank's two ring connections.
pub struct TcpGroup {
    rank: usize,
    world: usize,
    next: Option<TcpStream>,
    prev: Option<TcpStream>,
    out: Vec<u8>,
    inp: Vec<u8>,
    /// How long a collective waits for a peer (none: for ever).
    timeout: Option<Duration>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> WorkerError {
    move |e| WorkerError::Store(format!("{what}: {e}"))
}

impl TcpGroup {
    /// Joins the ring through the store: publishes this rank's listening address under
    /// `prefix`, then connects to the next rank's.
    pub fn join(
        store: &mut StoreClient,
        prefix: &str,
        rank: usize,
        world: usize,
    ) -> Result<Self, WorkerError> {
        let listener = TcpListener::bind((store.local_ip()?, 0))
            .map_err(io("binding a port for the ring".into()))?;
        let me = listener.local_addr().map_err(io("the ring port".into()))?;
        store.set(&format!("{prefix}/addr/{rank}"), &me.to_string())?;
        let next = store.get(&format!("{prefix}/addr/{}", (rank + 1) % world))?;
        let next: SocketAddr = next
            .parse()
            .map_err(|_| WorkerError::Store(format!("rank {}'s address {next:?}", rank + 1)))?;
        Self::connect(rank, world, listener, next)
    }

    /// Connects the ring given this rank's listener and the next rank's address.
    pub fn connect(
        rank: usize,
        world: usize,
        listener: TcpListener,
        next: SocketAddr,
    ) -> Result<Self, WorkerError> {
        let mut g = Self {
            rank,
            world,
            next: None,
            prev: None,
            out: Vec::new(),
            inp: Vec::new(),
            timeout: None,
        };
        if world == 1 {
            return Ok(g);
        }
        let to = (rank + 1) % world;
        let start = Instant::now();
        let mut stream = loop {
            match TcpStream::connect(next) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    return Err(io(format!("connecting to rank {to} at {next}"))(e))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .write_all(&(rank as u64).to_le_bytes())
            .map_err(io(format!("greeting rank {to}")))?;
        let (mut prev, _) = listener
            .accept()
            .map_err(io("accepting the previous rank".into()))?;
        let mut hello = [0u8; 8];
        prev.read_exact(&mut hello)
            .map_err(io("reading the previous rank's greeting".into()))?;
        let from = u64::from_le_bytes(hello) as usize;
        if from != (rank + world - 1) % world {
            return Err(WorkerError::Store(format!(
                "rank {rank} expected rank {} on its ring port, got rank {from}",
                (rank + world - 1) % world
            )));
        }
        for s in [&stream, &prev] {
            s.set_nodelay(true).map_err(io("TCP_NODELAY".into()))?;
        }
        (g.next, g.prev) = (Some(stream), Some(prev));
        Ok(g)
    }

    /// Makes every collective fail after waiting `timeout` for a peer (a rank that hangs, or
    /// was stopped with SIGSTOP, never closes its connection: without a limit the others wait
    /// for ever, and their launcher with them).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, WorkerError> {
        for s in self.next.iter().chain(self.prev.iter()) {
            s.set_read_timeout(Some(timeout))
                .and_then(|_| s.set_write_timeout(Some(timeout)))
                .map_err(io("setting the ring's timeout".into()))?;
        }
        self.timeout = Some(timeout);
        Ok(self)
    }

    /// Encodes `send` (with its length) as the next message to the next rank.
    fn stage<T: Wire>(&mut self, send: &[T]) {
        let n = send.len();
        self.out.clear();
        self.out.extend_from_slice(&(n as u64).to_le_bytes());
        self.out.resize(8 + n * T::SIZE, 0);
        for (v, b) in send.iter().zip(self.out[8..].chunks_exact_mut(T::SIZE)) {
            v.put(b);
        }
    }

    /// Sends the staged message to the next rank while receiving `m` values from the previous
    /// one, handed to `recv` one by one.
    fn pass<T: Wire>(
        &mut self,
        m: usize,
        mut recv: impl FnMut(usize, T),
    ) -> Result<(), TrainError> {
        let (Some(next), Some(prev)) = (self.next.as_mut(), self.prev.as_mut()) else {
            return Ok(());
        };
        self.inp.resize(8 + m * T::SIZE, 0);
        let (out, inp) = (&self.out, &mut self.inp);
        let (rank, world, timeout) = (self.rank, self.world, self.timeout);
        let fail = |what: &str, peer: usize, e: std::io::Error| {
            use std::io::ErrorKind::{
                BrokenPipe, ConnectionReset, TimedOut, UnexpectedEof, WouldBlock,
            };
            TrainError::Collective(match (e.kind(), timeout) {
                (UnexpectedEof | BrokenPipe | ConnectionReset, _) => format!(
                    "rank {rank} lost its connection to rank {peer}, which has left (its own error says why): {e}"
                ),
                (WouldBlock | TimedOut, Some(t)) => format!(
                    "rank {rank} waited {} s for rank {peer} in a collective: it, or a rank it waits for in turn, hangs or was stopped ({COLLECTIVE_TIMEOUT_VAR} sets how long ranks wait, in seconds)",
                    t.as_secs()
                ),
                _ => format!("rank {rank} {what} (rank {peer}): {e}"),
            })
        };
        std::thread::scope(|s| {
            let sender = s.spawn(move || next.write_all(out));
            let got = prev.read_exact(&mut inp[..8]).and_then(|_| {
                let len = u64::from_le_bytes(inp[..8].try_into().unwrap_or_default()) as usize;
                if len != m {
                    return Err(std::io::Error::other(format!(
                        "rank {} sent {len} values, this rank expected {m}",
                        (rank + world - 1) % world
                    )));
                }
                prev.read_exact(&mut inp[8..])
            });
            let sent = sender
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("sender thread panicked")));
            got.map_err(|e| {
                fail(
                    "receiving from the previous rank",
                    (rank + world - 1) % world,
                    e,
                )
            })?;
            sent.map_err(|e| fail("sending to the next rank", (rank + 1) % world, e))
        })?;
        for (i, b) in self.inp[8..].chunks_exact(T::SIZE).enumerate() {
            recv(i, T::get(b));
        }
        Ok(())
    }

    /// Ring all-reduce (sum) of `buf` in place.
    fn all_reduce<T: Wire>(&mut self, buf: &mut [T]) -> Result<(), TrainError> {
        let (r, w) = (self.rank, self.world);
        if w == 1 {
            return Ok(());
        }
        let len = buf.len();
        let bounds = |c: usize| c * len / w..(c + 1) * len / w;
        // Reduce-scatter: after w−1 passes this rank holds chunk (r+1) % w summed over all.
        for s in 0..w - 1 {
            self.stage(&buf[bounds((r + w - s) % w)]);
            let dst = &mut buf[bounds((r + 2 * w - s - 1) % w)];
            self.pass(dst.len(), |i, v: T| dst[i] = dst[i].add(v))?;
        }
        // All-gather of the summed chunks.
        for s in 0..w - 1 {
            self.stage(&buf[bounds((r + 1 + w - s) % w)]);
            let dst = &mut buf[bounds((r + w - s) % w)];
            self.pass(dst.len(), |i, v: T| dst[i] = v)?;
        }
        Ok(())
    }

    /// Ring all-gather of equal-length blocks, in rank order.
    fn gather<T: Wire>(&mut self, local: &[T]) -> Result<Vec<T>, TrainError> {
        let (r, w, n) = (self.rank, self.world, local.len());
        let mut out = vec![T::default(); n * w];
        out[r * n..(r + 1) * n].copy_from_slice(local);
        for s in 0..w - 1 {
            let from = (r + w - s) % w;
            self.stage(&out[from * n..(from + 1) * n]);
            let to = (r + 2 * w - s - 1) % w;
            let dst = &mut out[to * n..(to + 1) * n];
            self.pass(n, |i, v: T| dst[i] = v)?;
        }
        Ok(out)
    }
}

impl GradSync for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_mean(&mut self, buf: &mut [f32]) -> tmca_trainer::Result<()> {
        self.all_reduce(buf)?;
        let n = self.world as f32;
        buf.iter_mut().for_each(|v| *v /= n);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> tmca_trainer::Result<()> {
        self.all_reduce(buf)
    }
    fn all_gather(&mut self, local: &[f32]) -> tmca_trainer::Result<Vec<f32>> {
        self.gather(local)
    }
    fn all_gather_u64(&mut self, local: &[u64]) -> tmca_trainer::Result<Vec<u64>> {
        self.gather(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `world` ranks as threads on loopback, each running `f` on its group.
    fn ring<R: Send + 'static>(
        world: usize,
        f: impl Fn(TcpGroup) -> R + Send + Sync + 'static,
    ) -> Vec<R> {
        let listeners: Vec<TcpListener> = (0..world)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let f = std::sync::Arc::new(f);
        let handles: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let (f, next) = (f.clone(), addrs[(r + 1) % world]);
                std::thread::spawn(move || f(TcpGroup::connect(r, world, l, next).unwrap()))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn ring_collectives_match_the_definition_for_every_world_size() {
        for world in 1..=4 {
            // Lengths below, at and above the world size (empty chunks included).
            for len in [0usize, 1, 3, 4, 7, 1000] {
                let out = ring(world, move |mut g| {
                    let r = g.rank();
                    let mut v: Vec<f32> = (0..len).map(|i| (i * 10 + r) as f32).collect();
                    g.all_reduce_mean(&mut v).unwrap();
                    let mut s = vec![r as f64 + 0.25; len.min(3)];
                    g.all_reduce_sum_f64(&mut s).unwrap();
                    let gathered = g.all_gather_u64(&vec![r as u64; len.min(5)]).unwrap();
                    (v, s, gathered)
                });
                let rsum: usize = (0..world).sum();
                for (v, s, gathered) in &out {
                    let want: Vec<f32> = (0..len)
                        .map(|i| (i * 10 * world + rsum) as f32 / world as f32)
                        .collect();
                    assert_eq!(v, &want, "world {world} len {len}");
                    assert!(s.iter().all(|x| *x == rsum as f64 + 0.25 * world as f64));
                    let want: Vec<u64> = (0..world)
                        .flat_map(|r| vec![r as u64; len.min(5)])
                        .collect();
                    assert_eq!(gathered, &want);
                    // Bit-identical on every rank.
                    assert_eq!(v, &out[0].0);
                }
            }
        }
    }

    /// A peer that stops answering (hung, SIGSTOP) fails the collective after the timeout,
    /// naming it and the setting.
    #[test]
    fn a_silent_peer_fails_the_collective_after_the_timeout() {
        let out = ring(2, |g| {
            let mut g = g.with_timeout(Duration::from_millis(300)).unwrap();
            if g.rank() == 1 {
                // Rank 1 is late by more than the timeout (then it finds rank 0 gone).
                std::thread::sleep(Duration::from_millis(1500));
            }
            let start = Instant::now();
            let r = g.all_reduce_sum_f64(&mut [1.0]).map_err(|e| e.to_string());
            (r, start.elapsed())
        });
        let (e, waited) = &out[0];
        let e = e.as_ref().unwrap_err();
        assert!(
            e.contains("waited 0 s for rank 1") && e.contains(COLLECTIVE_TIMEOUT_VAR),
            "{e}"
        );
        assert!(*waited < Duration::from_millis(1400), "{waited:?}");
    }

    #[test]
    fn ranks_that_disagree_on_a_size_fail_with_a_message() {
        let out = ring(2, |mut g| {
            let mut v = vec![1.0f64; 2 + g.rank()];
            g.all_reduce_sum_f64(&mut v).map_err(|e| e.to_string())
        });
        let e = out.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(e.contains("sent") && e.contains("expected"), "{e}");
    }
}
