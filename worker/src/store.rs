//! Client of the rendezvous store `tmca launch` runs: a key–value map over TCP in which ranks
//! publish their addresses and wait for each other's. One request per line, no spaces in keys
//! or values: `SET key value` → `OK`, `GET key` → `VAL value` once the key exists (the server
//! holds the answer until then).

use crate::WorkerError;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a `GET` waits for another rank's key.
pub const WAIT: Duration = Duration::from_secs(600);

/// How often a connection still waited for is reported.
const TELL_EVERY: Duration = Duration::from_secs(30);

/// A connection to the store.
pub struct StoreClient {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn err(addr: &str, message: impl std::fmt::Display) -> WorkerError {
    WorkerError::Store(format!("{addr}: {message}"))
}

impl StoreClient {
    /// Connects to `addr` (host:port), retrying for up to `patience` while the store starts.
    pub fn connect(addr: &str, patience: Duration) -> Result<Self, WorkerError> {
        Self::connect_telling(addr, patience, false)
    }

    /// [`Self::connect`], logging every 30 s while it waits when `tell` (one process per
    /// node says it, not every rank).
    pub fn connect_telling(
        addr: &str,
        patience: Duration,
        tell: bool,
    ) -> Result<Self, WorkerError> {
        let start = Instant::now();
        let mut told = Duration::ZERO;
        let stream = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if start.elapsed() >= patience => {
                    return Err(err(
                        addr,
                        format!(
                            "cannot connect in {} s: {e} (is node 0's tmca launch running, and is this its --master address and port?)",
                            patience.as_secs()
                        ),
                    ));
                }
                Err(e) => {
                    // Nodes started by hand can be minutes apart: say what is awaited.
                    if tell && start.elapsed() >= told + TELL_EVERY {
                        told = start.elapsed();
                        tracing::info!(
                            "waiting for the rendezvous store at {addr} (node 0's launcher) for {} s: {e}",
                            told.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50))
                }
            }
        };
        stream.set_nodelay(true).map_err(|e| err(addr, e))?;
        // A rank that never arrives (its node gave up, or was never started) ends the wait.
        stream
            .set_read_timeout(Some(WAIT))
            .map_err(|e| err(addr, e))?;
        let writer = stream.try_clone().map_err(|e| err(addr, e))?;
        Ok(Self {
            addr: addr.to_string(),
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// The local address of this connection: the interface other nodes reach this one on.
    pub fn local_ip(&self) -> Result<IpAddr, WorkerError> {
        Ok(self
            .writer
            .local_addr()
            .map_err(|e| err(&self.addr, e))?
            .ip())
    }

    fn request(&mut self, line: &str, reply: &str) -> Result<String, WorkerError> {
        writeln!(self.writer, "{line}").map_err(|e| err(&self.addr, e))?;
        let mut answer = String::new();
        let n = self.reader.read_line(&mut answer).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                err(
                    &self.addr,
                    format!(
                        "`{line}`: no answer in {} s (a rank never arrived?)",
                        WAIT.as_secs()
                    ),
                )
            } else {
                err(&self.addr, e)
            }
        })?;
        if n == 0 {
            return Err(err(&self.addr, "the store closed the connection"));
        }
        let answer = answer.trim_end();
        match answer.split_once(' ') {
            Some((tag, value)) if tag == reply => Ok(value.to_string()),
            _ if answer == reply => Ok(String::new()),
            _ => Err(err(&self.addr, format!("`{line}` answered `{answer}`"))),
        }
    }

    /// Stores `value` under `key`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), WorkerError> {
        if [key, value]
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(err(
                &self.addr,
                format!("bad key or value {key:?} = {value:?}"),
            ));
        }
        self.request(&format!("SET {key} {value}"), "OK")
            .map(|_| ())
    }

    /// The value of `key`, waiting until some rank has set it.
    pub fn get(&mut self, key: &str) -> Result<String, WorkerError> {
        self.request(&format!("GET {key}"), "VAL")
    }
}
