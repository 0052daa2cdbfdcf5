//! One JSON-RPC session with an OVSDB server. A task owns the socket: it matches replies to
//! requests, answers the server's `echo` (its inactivity probe), probes an idle server itself and
//! drops a connection that stays silent, and hands notifications (`update2`, `update3`, `locked`,
//! `stolen`) to the owner of the connection. A closed connection fails every pending request.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};
use tracing::{debug, warn};

use super::codec::JsonCodec;
use super::error::OvsdbError;
use super::operation::{parse_transact_reply, Operation, OperationResult};
use super::remote::{self, Remote, TlsFiles};
use super::schema::DatabaseSchema;

/// A message the server sent on its own.
#[derive(Debug, Clone)]
pub enum Notification {
    /// `update2` (monitor_cond): the monitor id and the table updates.
    Update2 {
        monitor_id: Json,
        updates: Json,
    },
    /// `update3` (monitor_cond_since): also the id of the transaction that made the change.
    Update3 {
        monitor_id: Json,
        last_txn_id: String,
        updates: Json,
    },
    /// `update` (plain monitor).
    Update {
        monitor_id: Json,
        updates: Json,
    },
    Locked(String),
    Stolen(String),
    Other {
        method: String,
        params: Json,
    },
}

#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Silence after which the client sends `echo`, and after which, unanswered, it disconnects.
    /// `None` disables the probe.
    pub probe_interval: Option<Duration>,
    /// How long one connection attempt (including TLS) may take.
    pub connect_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> ConnectionOptions {
        ConnectionOptions {
            probe_interval: Some(Duration::from_secs(5)),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

struct Call {
    method: String,
    /// Serialized once by the caller, copied verbatim into the request.
    params: Box<serde_json::value::RawValue>,
    /// The reply's `result` unparsed: the caller parses it (a monitor's initial reply, megabytes,
    /// is read straight into the cache, never as a JSON tree).
    reply: ReplySender,
}

/// Where a call's reply goes: its `result` unparsed, or the error.
type ReplySender = oneshot::Sender<Result<Box<RawValue>, OvsdbError>>;

/// A request as it goes on the wire, borrowing its parts.
#[derive(serde::Serialize)]
struct Request<'a> {
    id: u64,
    method: &'a str,
    params: &'a serde_json::value::RawValue,
}

/// `transact` parameters: the database name, then each operation.
struct TransactParams<'a> {
    database: &'a str,
    operations: &'a [Operation],
}

impl serde::Serialize for TransactParams<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut sequence = serializer.serialize_seq(Some(self.operations.len() + 1))?;
        sequence.serialize_element(self.database)?;
        for operation in self.operations {
            sequence.serialize_element(operation)?;
        }
        sequence.end()
    }
}

/// A handle to one open session. Cloning it shares the session.
#[derive(Clone)]
pub struct Connection {
    calls: mpsc::UnboundedSender<Call>,
    /// Becomes `Some(reason)` when the session task ends, for whoever waits on the connection.
    closed: watch::Receiver<Option<String>>,
    remote: Remote,
}

/// A message's envelope. `params` stays unparsed: a notification's table updates can be
/// megabytes, and they are parsed by whoever consumes them, not by the task reading the socket.
#[derive(Deserialize)]
struct Incoming {
    #[serde(default)]
    id: Json,
    method: Option<String>,
    params: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Json,
}

/// The notifications of one session, parsed as they are received.
pub struct Notifications {
    receiver: mpsc::UnboundedReceiver<(String, Box<RawValue>)>,
}

impl Notifications {
    /// The next notification; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<Notification> {
        let (method, params) = self.receiver.recv().await?;
        Some(parse_notification(method, &params))
    }

    pub fn try_recv(&mut self) -> Result<Notification, mpsc::error::TryRecvError> {
        let (method, params) = self.receiver.try_recv()?;
        Ok(parse_notification(method, &params))
    }
}

impl Connection {
    /// Connects and starts the session task. Notifications arrive on the returned receiver,
    /// which ends when the connection closes.
    pub async fn open(
        remote: &Remote,
        tls: Option<&TlsFiles>,
        options: &ConnectionOptions,
    ) -> Result<(Connection, Notifications), OvsdbError> {
        let stream = tokio::time::timeout(options.connect_timeout, remote::connect(remote, tls))
            .await
            .map_err(|_| OvsdbError::Timeout(options.connect_timeout))??;
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed_rx) = watch::channel(None);
        let session = Session {
            probe_interval: options.probe_interval,
            notifications: notify_tx,
            pending: HashMap::new(),
            next_id: 0,
            probe_id: None,
        };
        let remote_name = remote.to_string();
        tokio::spawn(async move {
            let result = session.run(stream, calls_rx).await;
            let reason = match result {
                Ok(()) => {
                    debug!(remote = %remote_name, "OVSDB session ended");
                    "closed by the server".to_string()
                }
                Err(error) => {
                    warn!(remote = %remote_name, %error, "OVSDB session ended");
                    error.to_string()
                }
            };
            let _ = closed_tx.send(Some(reason));
        });
        Ok((
            Connection {
                calls: calls_tx,
                closed: closed_rx,
                remote: remote.clone(),
            },
            Notifications { receiver: notify_rx },
        ))
    }

    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    /// Resolves when the session has ended, with the reason.
    pub async fn closed(&self) -> OvsdbError {
        let mut closed = self.closed.clone();
        let reason = closed
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|reason| reason.clone());
        OvsdbError::ConnectionLost(reason.unwrap_or_else(|| "closed".to_string()))
    }

    /// Sends a request and waits for its reply; a JSON-RPC `error` becomes [`OvsdbError::Rpc`].
    pub async fn call(&self, method: &str, params: Json) -> Result<Json, OvsdbError> {
        let reply = self.call_unparsed(method, params).await?;
        parse_result(method, &reply)
    }

    /// As [`Connection::call`], with the reply's `result` as the server sent it.
    async fn call_unparsed(&self, method: &str, params: Json) -> Result<Box<RawValue>, OvsdbError> {
        let params = serde_json::value::to_raw_value(&params)
            .map_err(|error| OvsdbError::Protocol(format!("cannot encode {method} parameters: {error}")))?;
        self.call_raw(method, params).await
    }

    async fn call_raw(
        &self,
        method: &str,
        params: Box<serde_json::value::RawValue>,
    ) -> Result<Box<RawValue>, OvsdbError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.calls
            .send(Call {
                method: method.to_string(),
                params,
                reply: reply_tx,
            })
            .map_err(|_| OvsdbError::NotSent)?;
        // A call still queued when the session ends is dropped unanswered (it was never written);
        // one that was written is answered `Disconnected` when the session ends.
        reply_rx.await.map_err(|_| OvsdbError::NotSent)?
    }

    pub async fn echo(&self, payload: Json) -> Result<Json, OvsdbError> {
        self.call("echo", payload).await
    }

    pub async fn list_dbs(&self) -> Result<Vec<String>, OvsdbError> {
        let reply = self.call("list_dbs", json!([])).await?;
        serde_json::from_value(reply).map_err(|error| OvsdbError::Protocol(format!("list_dbs reply: {error}")))
    }

    pub async fn get_schema(&self, database: &str) -> Result<DatabaseSchema, OvsdbError> {
        let reply = self.call("get_schema", json!([database])).await?;
        DatabaseSchema::parse(&reply)
    }

    /// Runs a transaction; `schema` types the rows a select returns.
    pub async fn transact(
        &self,
        database: &str,
        operations: &[Operation],
        schema: Option<&DatabaseSchema>,
    ) -> Result<Vec<OperationResult>, OvsdbError> {
        let params = serde_json::value::to_raw_value(&TransactParams { database, operations })
            .map_err(|error| OvsdbError::Protocol(format!("cannot encode a transaction: {error}")))?;
        let reply = self.call_raw("transact", params).await?;
        parse_transact_reply(operations, &parse_result("transact", &reply)?, schema)
    }

    /// `monitor_cond` (replies with `update2` table updates).
    pub async fn monitor_cond(&self, database: &str, monitor_id: Json, requests: Json) -> Result<Json, OvsdbError> {
        self.call("monitor_cond", json!([database, monitor_id, requests])).await
    }

    /// `monitor_cond_since`: returns whether the server found `last_txn_id` in its history, the
    /// id of its newest transaction, and the updates (only the changes since, when found).
    pub async fn monitor_cond_since(
        &self,
        database: &str,
        monitor_id: Json,
        requests: Json,
        last_txn_id: &str,
    ) -> Result<(bool, String, Json), OvsdbError> {
        let (found, txn_id, updates) = self
            .monitor_cond_since_unparsed(database, monitor_id, requests, last_txn_id)
            .await?;
        Ok((found, txn_id, parse_result("monitor_cond_since", &updates)?))
    }

    /// As [`Connection::monitor_cond_since`], with the updates as the server sent them, for
    /// [`super::Cache::apply_update2_unparsed`]: an initial reply of 100,000 rows is never a JSON
    /// tree.
    pub async fn monitor_cond_since_unparsed(
        &self,
        database: &str,
        monitor_id: Json,
        requests: Json,
        last_txn_id: &str,
    ) -> Result<(bool, String, Box<RawValue>), OvsdbError> {
        let reply = self
            .call_unparsed(
                "monitor_cond_since",
                json!([database, monitor_id, requests, last_txn_id]),
            )
            .await?;
        serde_json::from_str::<(bool, String, Box<RawValue>)>(reply.get())
            .map_err(|error| OvsdbError::Protocol(format!("bad monitor_cond_since reply: {error}")))
    }

    pub async fn monitor_cancel(&self, monitor_id: Json) -> Result<(), OvsdbError> {
        self.call("monitor_cancel", json!([monitor_id])).await.map(|_| ())
    }

    /// `lock`: true when granted now; otherwise a `locked` notification follows when it is.
    pub async fn lock(&self, lock_id: &str) -> Result<bool, OvsdbError> {
        let reply = self.call("lock", json!([lock_id])).await?;
        Ok(reply.get("locked").and_then(Json::as_bool).unwrap_or(false))
    }

    /// `steal`: takes the lock from its holder, which gets a `stolen` notification.
    pub async fn steal(&self, lock_id: &str) -> Result<bool, OvsdbError> {
        let reply = self.call("steal", json!([lock_id])).await?;
        Ok(reply.get("locked").and_then(Json::as_bool).unwrap_or(false))
    }

    pub async fn unlock(&self, lock_id: &str) -> Result<(), OvsdbError> {
        self.call("unlock", json!([lock_id])).await.map(|_| ())
    }
}

struct Session {
    probe_interval: Option<Duration>,
    notifications: mpsc::UnboundedSender<(String, Box<RawValue>)>,
    pending: HashMap<u64, (String, ReplySender)>,
    next_id: u64,
    /// The id of our own unanswered inactivity probe.
    probe_id: Option<u64>,
}

/// Upper bound of requests encoded into one write, so one flush carries a burst.
const MAX_CALLS_PER_WRITE: usize = 256;

impl Session {
    async fn run(
        mut self,
        stream: Box<dyn remote::Stream>,
        mut calls: mpsc::UnboundedReceiver<Call>,
    ) -> Result<(), OvsdbError> {
        let (reader, mut writer) = tokio::io::split(stream);
        let mut reader = FramedRead::with_capacity(reader, JsonCodec::new(), 64 * 1024);
        let mut codec = JsonCodec::new();
        let mut out = BytesMut::new();
        let far_future = Duration::from_secs(86_400 * 365);
        let mut probe_deadline = Instant::now() + self.probe_interval.unwrap_or(far_future);
        let result = loop {
            tokio::select! {
                message = reader.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => break Err(error),
                        None => break Ok(()),
                    };
                    self.probe_id = None;
                    probe_deadline = Instant::now() + self.probe_interval.unwrap_or(far_future);
                    if let Some(reply) = self.handle(&message)? {
                        codec.encode(reply, &mut out)?;
                        writer.write_all(&out).await?;
                        writer.flush().await?;
                        out.clear();
                    }
                }
                call = calls.recv() => {
                    let Some(call) = call else { break Ok(()) };
                    self.encode_call(call, &mut codec, &mut out)?;
                    let mut batched = 1;
                    while batched < MAX_CALLS_PER_WRITE {
                        match calls.try_recv() {
                            Ok(call) => self.encode_call(call, &mut codec, &mut out)?,
                            Err(_) => break,
                        }
                        batched += 1;
                    }
                    writer.write_all(&out).await?;
                    writer.flush().await?;
                    out.clear();
                }
                _ = tokio::time::sleep_until(probe_deadline) => {
                    let Some(interval) = self.probe_interval else { continue };
                    if self.probe_id.is_some() {
                        break Err(OvsdbError::Timeout(interval * 2));
                    }
                    let id = self.take_id();
                    self.probe_id = Some(id);
                    codec.encode(json!({"id": id, "method": "echo", "params": []}), &mut out)?;
                    writer.write_all(&out).await?;
                    writer.flush().await?;
                    out.clear();
                    probe_deadline = Instant::now() + interval;
                }
            }
        };
        for (_, (_, reply)) in self.pending.drain() {
            let _ = reply.send(Err(OvsdbError::Disconnected));
        }
        let _ = writer.shutdown().await;
        result
    }

    fn take_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn encode_call(&mut self, call: Call, codec: &mut JsonCodec, out: &mut BytesMut) -> Result<(), OvsdbError> {
        let id = self.take_id();
        codec.encode(
            Request {
                id,
                method: &call.method,
                params: &call.params,
            },
            out,
        )?;
        self.pending.insert(id, (call.method, call.reply));
        Ok(())
    }

    /// Handles one message; returns the reply to send, if the server asked something.
    fn handle(&mut self, message: &[u8]) -> Result<Option<Json>, OvsdbError> {
        let incoming: Incoming = serde_json::from_slice(message)
            .map_err(|error| OvsdbError::Protocol(format!("not a JSON-RPC message: {error}")))?;
        if let Some(method) = incoming.method {
            let params = match incoming.params {
                Some(params) => params,
                None => {
                    RawValue::from_string("[]".to_string()).map_err(|error| OvsdbError::Protocol(error.to_string()))?
                }
            };
            if !incoming.id.is_null() {
                // A request from the server: only `echo` is defined (RFC 7047 §4.1.11).
                return Ok(Some(if method == "echo" {
                    json!({"id": incoming.id, "result": &params, "error": null})
                } else {
                    json!({"id": incoming.id, "result": null, "error": format!("unknown method {method}")})
                }));
            }
            let _ = self.notifications.send((method, params));
            return Ok(None);
        }
        let Some(id) = incoming.id.as_u64() else {
            return Err(OvsdbError::Protocol(format!("reply with unknown id {}", incoming.id)));
        };
        if self.probe_id == Some(id) {
            return Ok(None);
        }
        let Some((method, reply)) = self.pending.remove(&id) else {
            // A reply to a probe answered after a newer message reset it.
            debug!(id, "reply to a request nobody waits for");
            return Ok(None);
        };
        let outcome = if incoming.error.is_null() {
            match incoming.result {
                Some(result) => Ok(result),
                None => {
                    RawValue::from_string("null".to_string()).map_err(|error| OvsdbError::Protocol(error.to_string()))
                }
            }
        } else {
            let error = match &incoming.error {
                Json::String(text) => text.clone(),
                other => other
                    .get("error")
                    .and_then(Json::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string()),
            };
            Err(OvsdbError::Rpc { method, error })
        };
        let _ = reply.send(outcome);
        Ok(None)
    }
}

/// A reply's `result` as a JSON tree.
fn parse_result(method: &str, result: &RawValue) -> Result<Json, OvsdbError> {
    serde_json::from_str(result.get()).map_err(|error| OvsdbError::Protocol(format!("{method} reply: {error}")))
}

fn parse_notification(method: String, params: &RawValue) -> Notification {
    let mut items = match serde_json::from_str::<Json>(params.get()) {
        Ok(Json::Array(items)) => items,
        Ok(other) => return Notification::Other { method, params: other },
        Err(error) => {
            return Notification::Other {
                method,
                params: Json::String(format!("unparsable: {error}")),
            }
        }
    };
    match (method.as_str(), items.len()) {
        ("update2", 2) | ("update", 2) => {
            let updates = items.pop().unwrap_or(Json::Null);
            let monitor_id = items.pop().unwrap_or(Json::Null);
            if method == "update2" {
                Notification::Update2 { monitor_id, updates }
            } else {
                Notification::Update { monitor_id, updates }
            }
        }
        ("update3", 3) => {
            let updates = items.pop().unwrap_or(Json::Null);
            let last_txn_id = items
                .pop()
                .and_then(|id| id.as_str().map(str::to_string))
                .unwrap_or_default();
            let monitor_id = items.pop().unwrap_or(Json::Null);
            Notification::Update3 {
                monitor_id,
                last_txn_id,
                updates,
            }
        }
        ("locked", 1) | ("stolen", 1) => {
            let lock = items
                .pop()
                .and_then(|id| id.as_str().map(str::to_string))
                .unwrap_or_default();
            if method == "locked" {
                Notification::Locked(lock)
            } else {
                Notification::Stolen(lock)
            }
        }
        _ => Notification::Other {
            method,
            params: Json::Array(items),
        },
    }
}

/// The inactivity probe's schedule on tokio's paused clock. The peer is the other end of an
/// in-memory stream (a real ovsdb-server cannot be paused); it speaks the same JSON-RPC framing.
#[cfg(test)]
mod probe_tests {
    use super::*;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

    struct Peer {
        reader: FramedRead<ReadHalf<DuplexStream>, JsonCodec>,
        writer: WriteHalf<DuplexStream>,
    }

    impl Peer {
        /// The next message from the session (a minute of paused time at most: a missing probe
        /// fails rather than hangs).
        async fn next(&mut self) -> Json {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.reader.next())
                .await
                .expect("a message within a minute")
                .expect("a message")
                .expect("JSON");
            serde_json::from_slice(&frame).expect("JSON")
        }

        async fn send(&mut self, message: Json) {
            self.writer.write_all(message.to_string().as_bytes()).await.unwrap();
            self.writer.flush().await.unwrap();
        }
    }

    /// A session with `probe` as its interval, and the peer's end.
    fn start(
        probe: Duration,
    ) -> (
        tokio::task::JoinHandle<Result<(), OvsdbError>>,
        Peer,
        mpsc::UnboundedSender<Call>,
    ) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let (notifications, _) = mpsc::unbounded_channel();
        let session = Session {
            probe_interval: Some(probe),
            notifications,
            pending: HashMap::new(),
            next_id: 0,
            probe_id: None,
        };
        let task = tokio::spawn(session.run(Box::new(ours), calls_rx));
        let (reader, writer) = tokio::io::split(theirs);
        let peer = Peer {
            reader: FramedRead::new(reader, JsonCodec::new()),
            writer,
        };
        (task, peer, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_gets_an_echo_after_the_interval_and_is_dropped_after_a_second() {
        let started = Instant::now();
        let (task, mut peer, _calls) = start(Duration::from_secs(5));
        let probe = peer.next().await;
        assert_eq!(probe["method"], "echo");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the echo goes after 5 s of silence"
        );
        // Unanswered: the session ends one more interval later, not before.
        let ended = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the session ends")
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(
            matches!(ended, Err(OvsdbError::Timeout(timeout)) if timeout == Duration::from_secs(10)),
            "{ended:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn any_message_from_the_server_restarts_the_silence_and_an_answered_probe_keeps_the_session() {
        let started = Instant::now();
        let (task, mut peer, _calls) = start(Duration::from_secs(5));
        // A notification at 3 s: the next probe is due 5 s after it.
        tokio::time::advance(Duration::from_secs(3)).await;
        peer.send(json!({"id": null, "method": "update2", "params": ["m", {}]}))
            .await;
        let probe = peer.next().await;
        assert_eq!(probe["method"], "echo");
        assert_eq!(started.elapsed(), Duration::from_secs(8));
        // Answered at once: the session lives on and probes again 5 s after the answer.
        peer.send(json!({"id": probe["id"], "result": [], "error": null})).await;
        let again = peer.next().await;
        assert_eq!(again["method"], "echo");
        assert_ne!(again["id"], probe["id"]);
        assert_eq!(started.elapsed(), Duration::from_secs(13));
        assert!(!task.is_finished());
        // The server's own echo is answered with its params.
        peer.send(json!({"id": "echo", "method": "echo", "params": ["x"]}))
            .await;
        let answer = peer.next().await;
        assert_eq!(answer, json!({"id": "echo", "result": ["x"], "error": null}));
        task.abort();
    }
}
