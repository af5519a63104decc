//! The MQTT session: connection settings, and the task that drives rumqttc's event loop.
//!
//! rumqttc's `publish()` returns once the message is queued; the broker's acknowledgement
//! arrives later as a `PubAck` naming only a packet id, and the id is assigned when the event
//! loop takes the message off its queue (`Outgoing::Publish(pkid)`). So every publish goes
//! through [`Session::publish`], which queues it and records its tag in a FIFO under one lock;
//! the event-loop task pops that FIFO for each `Outgoing::Publish`, in the same order, to learn
//! which packet id is which message. When the connection drops, the same lock is held while
//! rumqttc's queue and retransmission list are emptied and the FIFO cleared, so no message can
//! be half-tracked: everything unacknowledged simply goes again from the outbox after
//! reconnecting. The event loop is polled all the time, on its own task.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::url::{BrokerUrl, Protocol};

/// Largest number of publishes rumqttc keeps unacknowledged; [`Session`] users stay below it.
const RUMQTTC_INFLIGHT: u16 = 100;
/// Reconnect delays double from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Where Debian keeps the system's trusted certificate authorities.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// How to reach and log in to a broker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker.
    pub url: BrokerUrl,
    /// Further nodes of the same broker cluster, tried in turn after the one connected to
    /// fails (same scheme as `url`: the TLS settings serve them all).
    pub failover: Vec<BrokerUrl>,
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
    /// PEM certificate authorities for TLS (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
    /// Client id; the broker keeps the session under it.
    pub client_id: String,
    /// Keep-alive interval.
    pub keepalive: Duration,
    /// Largest packet accepted from the broker.
    pub max_incoming: usize,
    /// Largest packet sent.
    pub max_outgoing: usize,
    /// Retained message the broker publishes if the connection is lost: topic and payload.
    pub will: Option<(String, Vec<u8>)>,
    /// Whether the caller acknowledges each incoming message itself ([`Session::ack`]), once
    /// it has kept it, rather than rumqttc on receipt: what was received but not kept when
    /// the process died is then sent again.
    pub manual_acks: bool,
}

impl Settings {
    /// Settings for `url` under `client_id`: MQTT 3.1.1, plain login (none), the system's
    /// certificate authorities for TLS, 30 s keep-alive, 1 MiB packets in and 64 KiB out, no
    /// last will. Callers change what they need.
    pub fn new(url: BrokerUrl, client_id: impl Into<String>) -> Settings {
        Settings {
            url,
            failover: Vec::new(),
            protocol: Protocol::V311,
            ca_file: None,
            client_auth: None,
            credentials: None,
            client_id: client_id.into(),
            keepalive: Duration::from_secs(30),
            max_incoming: 1 << 20,
            max_outgoing: 64 << 10,
            will: None,
            manual_acks: false,
        }
    }

    /// Logs in as `username`, with the password read from `password_file` (none without
    /// one).
    pub fn login(
        mut self,
        username: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<Settings, crate::SecretError> {
        self.credentials = match (username, password_file) {
            (Some(user), Some(path)) => Some((user.to_owned(), crate::read_secret(path)?)),
            (Some(user), None) => Some((user.to_owned(), String::new())),
            (None, _) => None,
        };
        Ok(self)
    }
}

/// Why settings could not be turned into a client: a TLS file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{key} {path}: {source}")]
pub struct SettingsError {
    /// Which setting named the file: `ca_file`, `cert_file` or `key_file`.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What reading it said.
    #[source]
    pub source: std::io::Error,
}

/// Which incoming message to acknowledge ([`Session::ack`]): its packet id, on the connection
/// it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    epoch: u64,
    pkid: u16,
}

/// What a publish is, so that its acknowledgement can be routed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag<K> {
    /// A message of the caller's, identified by its key.
    Message(K),
    /// Something whose acknowledgement nobody waits for (status).
    Untracked,
}

/// What the session reports.
#[derive(Debug)]
pub enum LinkEvent<K> {
    /// Connected (again). Publishing may start; subscriptions should be renewed.
    Connected,
    /// The broker answered a subscription: `None` when it granted it, else why it refused
    /// (an ACL, or a broker without shared subscriptions). One per `subscribe`, in order.
    Subscribed(Option<String>),
    /// The broker acknowledged a publish.
    Acked(K),
    /// The broker acknowledged a publish with a failure reason (MQTT 5 only).
    Refused(K, String),
    /// A publish can never be sent: it is larger than the client's packet limit.
    TooLarge(K, String),
    /// A message arrived on a subscribed topic; `retained` when the broker replayed its last
    /// retained message on subscribing rather than relaying a new one.
    Incoming {
        /// The topic it was published on.
        topic: String,
        /// Its payload, as received: untrusted.
        payload: Bytes,
        /// Replayed from the broker's retained store.
        retained: bool,
        /// What [`Session::ack`] takes, with [`Settings::manual_acks`].
        receipt: Receipt,
    },
    /// The broker sent a message larger than this client takes (`max_incoming`): it is
    /// discarded, and so that a broker keeping it for this session cannot send it again at
    /// every reconnection, the next connection starts a clean session (which drops anything
    /// else the broker queued for it). Subscriptions are renewed on `Connected`.
    IncomingTooLarge(String),
    /// The connection was lost or could not be made; every unacknowledged publish is void.
    Disconnected(String),
}

/// Publishing failed because the session is not connected; try again after `Connected`.
#[derive(Debug, thiserror::Error)]
#[error("not connected to the broker")]
pub struct NotConnected;

/// A connection to a broker, kept up by a background task.
pub struct Session<K> {
    client: Client,
    link: Arc<Mutex<Link<K>>>,
    /// Where an acknowledgement that finds rumqttc's request queue full waits its turn.
    runtime: tokio::runtime::Handle,
}

struct Link<K> {
    connected: bool,
    /// Counts connections: a receipt from an earlier one names a packet id of that one.
    epoch: u64,
    /// Tags of publishes queued in rumqttc, in queue order.
    fifo: VecDeque<Tag<K>>,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl<K: Send + 'static> Session<K> {
    /// Starts connecting; events (acknowledgements, incoming messages, connection changes)
    /// arrive on the returned channel until `cancel`.
    pub fn start(
        settings: &Settings,
        tracker: &tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) -> Result<(Session<K>, mpsc::UnboundedReceiver<LinkEvent<K>>), SettingsError> {
        let transport = transport(settings)?;
        let link = Arc::new(Mutex::new(Link {
            connected: false,
            epoch: 0,
            fifo: VecDeque::new(),
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        let client = match settings.protocol {
            Protocol::V311 => {
                let nodes = nodes(settings, |url| {
                    let mut options =
                        rumqttc::MqttOptions::new(&settings.client_id, &url.host, url.port);
                    options
                        .set_keep_alive(settings.keepalive)
                        .set_clean_session(false)
                        .set_max_packet_size(settings.max_incoming, settings.max_outgoing)
                        .set_inflight(RUMQTTC_INFLIGHT)
                        .set_manual_acks(settings.manual_acks)
                        .set_transport(transport.clone());
                    if let Some((user, password)) = &settings.credentials {
                        options.set_credentials(user, password);
                    }
                    if let Some((topic, payload)) = &settings.will {
                        options.set_last_will(rumqttc::LastWill::new(
                            topic,
                            payload.clone(),
                            rumqttc::QoS::AtLeastOnce,
                            true,
                        ));
                    }
                    options
                });
                let (client, mut eventloop) =
                    rumqttc::AsyncClient::new(nodes[0].options.clone(), RUMQTTC_INFLIGHT as usize);
                eventloop.set_network_options(network_options());
                tracker.spawn(pump(eventloop, nodes, link.clone(), tx, cancel));
                Client::V4(client)
            }
            Protocol::V5 => {
                use rumqttc::v5;
                let nodes = nodes(settings, |url| {
                    let mut options =
                        v5::MqttOptions::new(&settings.client_id, &url.host, url.port);
                    options
                        .set_keep_alive(settings.keepalive)
                        .set_clean_start(false)
                        // Keep the session (subscriptions) for a day across disconnections.
                        .set_session_expiry_interval(Some(86_400))
                        .set_max_packet_size(Some(settings.max_incoming as u32))
                        .set_outgoing_inflight_upper_limit(RUMQTTC_INFLIGHT)
                        .set_network_options(network_options())
                        .set_manual_acks(settings.manual_acks)
                        .set_transport(transport.clone());
                    if let Some((user, password)) = &settings.credentials {
                        options.set_credentials(user, password);
                    }
                    if let Some((topic, payload)) = &settings.will {
                        options.set_last_will(v5::mqttbytes::v5::LastWill::new(
                            topic,
                            payload.clone(),
                            v5::mqttbytes::QoS::AtLeastOnce,
                            true,
                            None,
                        ));
                    }
                    options
                });
                let (client, eventloop) =
                    v5::AsyncClient::new(nodes[0].options.clone(), RUMQTTC_INFLIGHT as usize);
                tracker.spawn(pump(eventloop, nodes, link.clone(), tx, cancel));
                Client::V5(client)
            }
        };
        Ok((
            Session {
                client,
                link,
                runtime: tokio::runtime::Handle::current(),
            },
            rx,
        ))
    }

    fn link(&self) -> MutexGuard<'_, Link<K>> {
        lock(&self.link)
    }

    /// Whether the session is connected now.
    pub fn is_connected(&self) -> bool {
        self.link().connected
    }

    /// Queues a QoS 1 publish. Its acknowledgement comes back as [`LinkEvent::Acked`] with the
    /// tag's key. Never blocks: fails when not connected or when rumqttc's queue is full.
    pub fn publish(
        &self,
        tag: Tag<K>,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), NotConnected> {
        let mut link = self.link();
        if !link.connected {
            return Err(NotConnected);
        }
        let queued = match &self.client {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .is_ok(),
            Client::V5(c) => c
                .try_publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                )
                .is_ok(),
        };
        if !queued {
            return Err(NotConnected);
        }
        link.fifo.push_back(tag);
        Ok(())
    }

    /// Subscribes at QoS 1 (queued; renew after every `Connected`).
    pub fn subscribe(&self, filter: &str) {
        let result = match &self.client {
            Client::V4(c) => c.try_subscribe(filter, rumqttc::QoS::AtLeastOnce).is_ok(),
            Client::V5(c) => c
                .try_subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .is_ok(),
        };
        if !result {
            tracing::warn!(%filter, "could not queue a subscription");
        }
    }

    /// Unsubscribes (queued): for a persistent session that holds a filter it no longer wants.
    pub fn unsubscribe(&self, filter: &str) {
        let result = match &self.client {
            Client::V4(c) => c.try_unsubscribe(filter).is_ok(),
            Client::V5(c) => c.try_unsubscribe(filter).is_ok(),
        };
        if !result {
            tracing::warn!(%filter, "could not queue an unsubscription");
        }
    }

    /// Acknowledges an incoming message, with [`Settings::manual_acks`], once it is kept. A
    /// receipt from an earlier connection is dropped: the broker sends that message again.
    pub fn ack(&self, receipt: Receipt) {
        let link = self.link();
        if !link.connected || link.epoch != receipt.epoch || receipt.pkid == 0 {
            return;
        }
        drop(link);
        // A full queue must not lose the acknowledgement: a broker that never gets it holds
        // the message in flight, and enough of those stop the session's deliveries.
        match &self.client {
            Client::V4(c) => {
                let mut publish = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                publish.pkid = receipt.pkid;
                if c.try_ack(&publish).is_err() {
                    let c = c.clone();
                    self.runtime
                        .spawn(async move { c.ack(&publish).await.is_ok() });
                }
            }
            Client::V5(c) => {
                let mut publish = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                publish.pkid = receipt.pkid;
                if c.try_ack(&publish).is_err() {
                    let c = c.clone();
                    self.runtime
                        .spawn(async move { c.ack(&publish).await.is_ok() });
                }
            }
        }
    }

    /// Asks the broker to end the session cleanly (no last will).
    pub async fn disconnect(&self) {
        let _ = match &self.client {
            Client::V4(c) => c.disconnect().await.is_ok(),
            Client::V5(c) => c.disconnect().await.is_ok(),
        };
    }
}

/// One broker node to connect to, with the options naming it.
struct Node<O> {
    host: String,
    port: u16,
    options: O,
}

/// The settings' nodes, `url` first, then the failover ones.
fn nodes<O>(settings: &Settings, options: impl Fn(&BrokerUrl) -> O) -> Vec<Node<O>> {
    std::iter::once(&settings.url)
        .chain(&settings.failover)
        .map(|url| Node {
            host: url.host.clone(),
            port: url.port,
            options: options(url),
        })
        .collect()
}

/// Small packets (alerts, acknowledgements) go out at once rather than waiting to be
/// coalesced with what follows.
fn network_options() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

/// rumqttc's transport for the settings: plain TCP, or TLS with the given (or the system's)
/// certificate authorities and an optional client certificate.
fn transport(settings: &Settings) -> Result<rumqttc::Transport, SettingsError> {
    if !settings.url.tls {
        return Ok(rumqttc::Transport::tcp());
    }
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| SettingsError {
            key,
            path: path.to_owned(),
            source,
        })
    };
    let ca = match &settings.ca_file {
        Some(path) => read("ca_file", path)?,
        None => read("ca_file", Path::new(SYSTEM_CA_BUNDLE))?,
    };
    let client_auth = match &settings.client_auth {
        Some((cert, key)) => Some((read("cert_file", cert)?, read("key_file", key)?)),
        None => None,
    };
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        },
    ))
}

/// What either protocol's event loop reports, reduced to what the session needs.
enum Raw {
    ConnAck,
    OutgoingPublish(u16),
    PubAck {
        pkid: u16,
        failure: Option<String>,
    },
    Publish {
        topic: String,
        payload: Bytes,
        retained: bool,
        pkid: u16,
    },
    SubAck {
        refused: Option<String>,
    },
    /// `disconnect` was sent: the session ends once the broker closes the connection.
    Gone,
    Other,
}

/// Why polling failed.
struct Failure {
    message: String,
    /// The message being sent exceeds the packet size limit: sending it again cannot work.
    too_large: bool,
    /// A message received exceeded this client's limit.
    incoming_too_large: bool,
}

/// The two protocols' event loops, behind one face.
trait EventLoop: Send {
    /// What names the broker to connect to, and how.
    type Options: Clone + Send;
    fn poll(&mut self) -> impl std::future::Future<Output = Result<Raw, Failure>> + Send;
    /// Drops the connection and everything rumqttc would send again on reconnecting.
    fn reset(&mut self);
    /// Whether the next connection keeps the broker's session (or starts a clean one).
    fn keep_session(&mut self, keep: bool);
    /// Connects to another node next, keeping whether the session is kept.
    fn switch(&mut self, options: &Self::Options);
}

impl EventLoop for rumqttc::EventLoop {
    type Options = rumqttc::MqttOptions;

    async fn poll(&mut self) -> Result<Raw, Failure> {
        use rumqttc::mqttbytes::Error as Bytes;
        use rumqttc::{ConnectionError, Event, Outgoing, Packet, StateError};
        let polled = rumqttc::EventLoop::poll(self).await.map_err(|e| Failure {
            too_large: matches!(
                e,
                ConnectionError::MqttState(StateError::Deserialization(
                    Bytes::OutgoingPacketTooLarge { .. }
                ))
            ),
            incoming_too_large: matches!(
                e,
                ConnectionError::MqttState(StateError::Deserialization(
                    Bytes::PayloadSizeLimitExceeded(_)
                ))
            ),
            message: describe_v4(&e),
        })?;
        Ok(match polled {
            Event::Incoming(Packet::ConnAck(_)) => Raw::ConnAck,
            Event::Incoming(Packet::PubAck(ack)) => Raw::PubAck {
                pkid: ack.pkid,
                failure: None,
            },
            Event::Incoming(Packet::Publish(p)) => Raw::Publish {
                topic: p.topic,
                payload: p.payload,
                retained: p.retain,
                pkid: p.pkid,
            },
            Event::Incoming(Packet::SubAck(ack)) => Raw::SubAck {
                refused: ack
                    .return_codes
                    .iter()
                    .any(|code| matches!(code, rumqttc::SubscribeReasonCode::Failure))
                    .then(|| "the broker refused the subscription".to_owned()),
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => Raw::OutgoingPublish(pkid),
            Event::Outgoing(Outgoing::Disconnect) => Raw::Gone,
            _ => Raw::Other,
        })
    }

    fn reset(&mut self) {
        self.clean();
        self.pending.clear();
        // Events buffered from the broken connection would be misread after reconnecting.
        self.state.events.clear();
    }

    fn keep_session(&mut self, keep: bool) {
        self.mqtt_options.set_clean_session(!keep);
    }

    fn switch(&mut self, options: &rumqttc::MqttOptions) {
        let clean = self.mqtt_options.clean_session();
        self.mqtt_options = options.clone();
        self.mqtt_options.set_clean_session(clean);
    }
}

impl EventLoop for rumqttc::v5::EventLoop {
    type Options = rumqttc::v5::MqttOptions;

    async fn poll(&mut self) -> Result<Raw, Failure> {
        use rumqttc::Outgoing;
        use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
        use rumqttc::v5::{ConnectionError, Event, StateError};
        let polled = rumqttc::v5::EventLoop::poll(self)
            .await
            .map_err(|e| Failure {
                too_large: matches!(
                    e,
                    ConnectionError::MqttState(StateError::OutgoingPacketTooLarge { .. })
                ),
                incoming_too_large: matches!(
                    e,
                    ConnectionError::MqttState(StateError::Deserialization(
                        rumqttc::v5::mqttbytes::Error::PayloadSizeLimitExceeded { .. }
                    ))
                ),
                message: describe_v5(&e),
            })?;
        Ok(match polled {
            Event::Incoming(Packet::ConnAck(_)) => Raw::ConnAck,
            Event::Incoming(Packet::PubAck(ack)) => Raw::PubAck {
                pkid: ack.pkid,
                failure: match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                    reason => Some(format!(
                        "{reason:?}{}",
                        ack.properties
                            .and_then(|p| p.reason_string)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )),
                },
            },
            Event::Incoming(Packet::Publish(p)) => Raw::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                retained: p.retain,
                pkid: p.pkid,
            },
            Event::Incoming(Packet::SubAck(ack)) => Raw::SubAck {
                refused: ack
                    .return_codes
                    .iter()
                    .find(|code| !matches!(code, SubscribeReasonCode::Success(_)))
                    .map(|code| {
                        format!(
                            "the broker refused the subscription: {code:?}{}",
                            ack.properties
                                .as_ref()
                                .and_then(|p| p.reason_string.as_ref())
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default()
                        )
                    }),
            },
            Event::Outgoing(Outgoing::Publish(pkid)) => Raw::OutgoingPublish(pkid),
            Event::Outgoing(Outgoing::Disconnect) => Raw::Gone,
            _ => Raw::Other,
        })
    }

    fn reset(&mut self) {
        self.clean();
        self.pending.clear();
        self.state.events.clear();
    }

    fn keep_session(&mut self, keep: bool) {
        self.options.set_clean_start(!keep);
    }

    fn switch(&mut self, options: &rumqttc::v5::MqttOptions) {
        let clean = self.options.clean_start();
        self.options = options.clone();
        self.options.set_clean_start(clean);
    }
}

fn lock<K>(link: &Mutex<Link<K>>) -> MutexGuard<'_, Link<K>> {
    link.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls the event loop until `cancel`, reconnecting with backoff to each of `nodes` in turn
/// (a wait cut short once the node tried next accepts connections again), and routes what it
/// sees.
async fn pump<L: EventLoop, K: Send>(
    mut eventloop: L,
    nodes: Vec<Node<L::Options>>,
    link: Arc<Mutex<Link<K>>>,
    events: mpsc::UnboundedSender<LinkEvent<K>>,
    cancel: CancellationToken,
) {
    let mut pkids: HashMap<u16, Tag<K>> = HashMap::new();
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    let (mut after_oversized, mut leaving) = (false, false);
    // The node connected to, or tried: after a failure the next one is tried.
    let mut node = 0;
    // This connection's number, as `link.epoch` has it: what each incoming message's
    // receipt carries, without taking the lock for it.
    let mut epoch = 0;
    loop {
        let polled = tokio::select! {
            _ = cancel.cancelled() => return,
            polled = eventloop.poll() => polled,
        };
        let event = match polled {
            Ok(Raw::ConnAck) => {
                let mut link = lock(&link);
                link.connected = true;
                link.epoch += 1;
                epoch = link.epoch;
                link.fifo.clear();
                // After an oversized message the delay keeps growing: one retained on a
                // subscribed topic comes again on every connection.
                if !after_oversized {
                    backoff.reset();
                }
                after_oversized = false;
                // After a clean start for an oversized message, sessions persist again.
                eventloop.keep_session(true);
                LinkEvent::Connected
            }
            Ok(Raw::OutgoingPublish(pkid)) => {
                if let Some(tag) = lock(&link).fifo.pop_front() {
                    pkids.insert(pkid, tag);
                }
                continue;
            }
            Ok(Raw::PubAck { pkid, failure }) => match (pkids.remove(&pkid), failure) {
                (Some(Tag::Message(key)), None) => LinkEvent::Acked(key),
                (Some(Tag::Message(key)), Some(reason)) => LinkEvent::Refused(key, reason),
                _ => continue,
            },
            Ok(Raw::Publish {
                topic,
                payload,
                retained,
                pkid,
            }) => LinkEvent::Incoming {
                topic,
                payload,
                retained,
                receipt: Receipt { epoch, pkid },
            },
            Ok(Raw::SubAck { refused }) => LinkEvent::Subscribed(refused),
            // Sent and flushed: what was asked before it reached the broker first.
            // Sent: reading on until the broker closes the connection, so that what it still
            // sends (acknowledgements of what was asked just before) is read, and closing
            // does not reset the connection before it took everything in.
            Ok(Raw::Gone) => {
                leaving = true;
                continue;
            }
            Ok(Raw::Other) => continue,
            Err(_) if leaving => return,
            Err(failure) => {
                let too_large = {
                    let mut link = lock(&link);
                    link.connected = false;
                    eventloop.reset();
                    // The publish that failed is the first not yet given a packet id.
                    let failed = if failure.too_large {
                        link.fifo.pop_front()
                    } else {
                        None
                    };
                    link.fifo.clear();
                    failed
                };
                pkids.clear();
                if failure.incoming_too_large {
                    eventloop.keep_session(false);
                    after_oversized = true;
                    if events
                        .send(LinkEvent::IncomingTooLarge(failure.message.clone()))
                        .is_err()
                    {
                        return;
                    }
                }
                if let Some(Tag::Message(key)) = too_large
                    && events
                        .send(LinkEvent::TooLarge(key, failure.message.clone()))
                        .is_err()
                {
                    return;
                }
                if events
                    .send(LinkEvent::Disconnected(failure.message))
                    .is_err()
                {
                    return;
                }
                if nodes.len() > 1 {
                    node = (node + 1) % nodes.len();
                    eventloop.switch(&nodes[node].options);
                }
                let waited = match nodes.get(node) {
                    Some(next) => backoff.wait_for(&next.host, next.port, &cancel).await,
                    None => backoff.wait(&cancel).await,
                };
                if !waited {
                    return;
                }
                continue;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// A connection error in words a technician can act on.
fn describe_v4(error: &rumqttc::ConnectionError) -> String {
    use rumqttc::{ConnectReturnCode, ConnectionError};
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the user name or password".into()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused this client (not authorised)".into()
            }
            ConnectReturnCode::BadClientId => "the broker refused the client id".into(),
            other => format!("the broker refused the connection ({other:?})"),
        },
        ConnectionError::Tls(e) => {
            format!("TLS with the broker failed: {e} (check mqtt.ca_file, cert_file and key_file)")
        }
        other => other.to_string(),
    }
}

fn describe_v5(error: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError;
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode;
    match error {
        ConnectionError::ConnectionRefused(code) => match code {
            ConnectReturnCode::BadUserNamePassword => {
                "the broker refused the user name or password".into()
            }
            ConnectReturnCode::NotAuthorized => {
                "the broker refused this client (not authorised)".into()
            }
            other => format!("the broker refused the connection ({other:?})"),
        },
        ConnectionError::Tls(e) => {
            format!("TLS with the broker failed: {e} (check mqtt.ca_file, cert_file and key_file)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One thing the scripted event loop does when polled.
    enum Step {
        /// What `Session::publish` does: a tag queued behind rumqttc's queue.
        Queue(&'static str),
        /// What the event loop reports.
        Poll(Result<Raw, Failure>),
    }

    /// An event loop that plays a script, then waits forever.
    struct Scripted {
        steps: VecDeque<Step>,
        link: Arc<Mutex<Link<&'static str>>>,
        resets: usize,
        /// Each change of whether the next connection keeps the session.
        sessions: Arc<Mutex<Vec<bool>>>,
    }

    fn lock_sessions(sessions: &Mutex<Vec<bool>>) -> MutexGuard<'_, Vec<bool>> {
        sessions.lock().unwrap()
    }

    impl EventLoop for Scripted {
        type Options = ();

        async fn poll(&mut self) -> Result<Raw, Failure> {
            loop {
                match self.steps.pop_front() {
                    Some(Step::Queue(key)) => lock(&self.link).fifo.push_back(Tag::Message(key)),
                    Some(Step::Poll(result)) => return result,
                    None => std::future::pending::<()>().await,
                }
            }
        }

        fn reset(&mut self) {
            self.resets += 1;
        }

        fn switch(&mut self, _: &()) {}

        fn keep_session(&mut self, keep: bool) {
            // Only changes are of interest: every connection says "keep".
            let mut sessions = lock_sessions(&self.sessions);
            if sessions.last() != Some(&keep) {
                sessions.push(keep);
            }
        }
    }

    fn ack(pkid: u16) -> Step {
        Step::Poll(Ok(Raw::PubAck {
            pkid,
            failure: None,
        }))
    }

    fn out(pkid: u16) -> Step {
        Step::Poll(Ok(Raw::OutgoingPublish(pkid)))
    }

    fn failure(too_large: bool) -> Step {
        Step::Poll(Err(Failure {
            message: "connection reset".into(),
            too_large,
            incoming_too_large: false,
        }))
    }

    /// Runs `steps` through the pump; returns every event it reported, as words.
    async fn run(steps: Vec<Step>, expected: usize) -> Vec<String> {
        run_with_sessions(steps, expected).await.0
    }

    /// [`run`], with each change of whether the next connection keeps the session.
    async fn run_with_sessions(steps: Vec<Step>, expected: usize) -> (Vec<String>, Vec<bool>) {
        let link = Arc::new(Mutex::new(Link {
            connected: false,
            epoch: 0,
            fifo: VecDeque::new(),
        }));
        let sessions = Arc::new(Mutex::new(vec![true]));
        let scripted = Scripted {
            steps: steps.into(),
            link: link.clone(),
            resets: 0,
            sessions: sessions.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let pump = tokio::spawn(pump(scripted, Vec::new(), link, tx, cancel.clone()));
        let mut words = Vec::new();
        while words.len() < expected {
            let Some(event) = rx.recv().await else { break };
            words.push(match event {
                LinkEvent::Connected => "connected".to_owned(),
                LinkEvent::Subscribed(refused) => format!("subscribed {refused:?}"),
                LinkEvent::Acked(key) => format!("acked {key}"),
                LinkEvent::Refused(key, why) => format!("refused {key}: {why}"),
                LinkEvent::TooLarge(key, _) => format!("too large {key}"),
                LinkEvent::Incoming { topic, .. } => format!("incoming {topic}"),
                LinkEvent::IncomingTooLarge(_) => "incoming too large".to_owned(),
                LinkEvent::Disconnected(_) => "disconnected".to_owned(),
            });
        }
        cancel.cancel();
        let _ = pump.await;
        let sessions = lock_sessions(&sessions).clone();
        (words, sessions)
    }

    #[tokio::test(start_paused = true)]
    async fn an_oversized_incoming_message_is_dropped_with_the_session_once_then_sessions_persist()
    {
        let (words, sessions) = run_with_sessions(
            vec![
                Step::Poll(Ok(Raw::ConnAck)),
                Step::Poll(Err(Failure {
                    message: "payload size limit exceeded".into(),
                    too_large: false,
                    incoming_too_large: true,
                })),
                Step::Poll(Ok(Raw::ConnAck)),
            ],
            4,
        )
        .await;
        assert_eq!(
            words,
            [
                "connected",
                "incoming too large",
                "disconnected",
                "connected"
            ]
        );
        // Kept, then one clean start so the broker forgets the message, then kept again.
        assert_eq!(sessions, [true, false, true]);
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledgements_out_of_order_reach_the_message_that_was_sent() {
        let words = run(
            vec![
                Step::Poll(Ok(Raw::ConnAck)),
                Step::Queue("alert"),
                Step::Queue("chunk-0"),
                Step::Queue("chunk-1"),
                out(7),
                out(8),
                out(9),
                ack(9),
                ack(7),
                // Status publishes nobody waits for, and acknowledgements of nothing.
                ack(42),
                Step::Poll(Ok(Raw::PubAck {
                    pkid: 8,
                    failure: Some("NotAuthorized".into()),
                })),
            ],
            4,
        )
        .await;
        assert_eq!(
            words,
            [
                "connected",
                "acked chunk-1",
                "acked alert",
                "refused chunk-0: NotAuthorized"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_connection_voids_every_packet_id_and_a_reused_one_finds_its_new_message() {
        let words = run(
            vec![
                Step::Poll(Ok(Raw::ConnAck)),
                Step::Queue("old"),
                out(1),
                failure(false),
                // The acknowledgement of the old packet 1 can never count after reconnecting.
                Step::Poll(Ok(Raw::ConnAck)),
                ack(1),
                Step::Queue("new"),
                out(1),
                ack(1),
            ],
            4,
        )
        .await;
        assert_eq!(
            words,
            ["connected", "disconnected", "connected", "acked new"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_over_the_packet_limit_is_named_as_the_one_too_large() {
        let words = run(
            vec![
                Step::Poll(Ok(Raw::ConnAck)),
                Step::Queue("small"),
                out(1),
                Step::Queue("huge"),
                Step::Queue("after"),
                failure(true),
            ],
            3,
        )
        .await;
        assert_eq!(words, ["connected", "too large huge", "disconnected"]);
    }
}
