//! The rendezvous store `tmca launch` runs for its ranks (tokio): a key–value map over TCP,
//! one request per line, `SET key value` → `OK`, `GET key` → `VAL value` as soon as the key
//! exists (the answer waits until then). The client is `tmca_worker::store::StoreClient`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    map: Mutex<HashMap<String, String>>,
    changed: Notify,
}

impl State {
    fn get(&self, key: &str) -> Option<String> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn set(&self, key: &str, value: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value.to_string());
        self.changed.notify_waiters();
    }

    /// The value of `key`, once it is set.
    async fn wait(&self, key: &str) -> String {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check: a `set` between the check and the await wakes us.
            changed.as_mut().enable();
            if let Some(v) = self.get(key) {
                return v;
            }
            changed.await;
        }
    }
}

/// Serves the store on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    let state = Arc::new(State::default());
    loop {
        let (sock, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = client(sock, &state).await {
                tracing::debug!("rendezvous client: {e}");
            }
        });
    }
}

async fn client(sock: TcpStream, state: &State) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let (read, mut write) = sock.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let mut words = line.split_whitespace();
        let answer = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v), None) => {
                state.set(k, v);
                "OK\n".to_string()
            }
            (Some("GET"), Some(k), None, None) => format!("VAL {}\n", state.wait(k).await),
            _ => format!("ERR bad request {line:?}\n"),
        };
        write.write_all(answer.as_bytes()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tmca_worker::store::StoreClient;

    #[test]
    fn a_get_waits_for_the_set_and_bad_requests_are_answered() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || rt.block_on(serve(listener)));
        let _ = server; // runs until the process ends

        let a = addr.clone();
        let waiter = std::thread::spawn(move || {
            let mut c = StoreClient::connect(&a, Duration::from_secs(5)).unwrap();
            c.get("attempt0/addr/1").unwrap()
        });
        std::thread::sleep(Duration::from_millis(100));
        let mut c = StoreClient::connect(&addr, Duration::from_secs(5)).unwrap();
        c.set("attempt0/addr/1", "127.0.0.1:4242").unwrap();
        assert_eq!(waiter.join().unwrap(), "127.0.0.1:4242");
        assert_eq!(c.get("attempt0/addr/1").unwrap(), "127.0.0.1:4242");
        let e = c.set("a b", "x").unwrap_err().to_string();
        assert!(e.contains("bad key"), "{e}");
    }
}
