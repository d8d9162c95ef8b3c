//! The task that owns the `Swarm`: builds the transport and behaviours, then turns commands
//! from [`P2p`] handles and events from the network into each other.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, upgrade::Version};
use libp2p::futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig};
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{
    self, InboundRequestId, OutboundRequestId, ProtocolSupport, ResponseChannel,
};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, Transport, allow_block_list, gossipsub, identify,
    noise, ping, tcp, yamux,
};
use prost::Message;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::proto::{self, PIECE_PROTOCOL, PieceCodec};
use super::{Command, ErrorCode, Have, P2p, P2pConfig, P2pError, PeerInfo, PieceService};
use crate::oci::Digest;

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossip: gossipsub::Behaviour,
    ping: ping::Behaviour,
    pieces: request_response::Behaviour<PieceCodec>,
}

/// TCP, noise and yamux. With a swarm key, noise's prologue is derived from it: the handshake
/// of two nodes completes only when both hold the same key, so a node without it neither joins
/// nor receives a byte of any protocol, while piece data is encrypted once (noise's
/// ChaCha20-Poly1305) instead of twice as under pnet (docs/design.md, "Swarm membership").
fn transport(
    key: &Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, P2pError> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let mut noise = noise::Config::new(key).map_err(|e| P2pError::Transport(e.to_string()))?;
    if let Some(psk) = psk {
        noise = noise.with_prologue(membership_prologue(&psk));
    }
    Ok(tcp
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed())
}

/// The noise prologue of swarm members: a one-way function of the swarm key (the prologue is
/// never sent, only mixed into the handshake hash, so peers with different keys fail the
/// handshake's first authenticated message).
fn membership_prologue(psk: &PreSharedKey) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(b"shoal swarm membership v1\n");
    h.update(psk.to_key_file().as_bytes());
    h.finalize().to_vec()
}

fn topic(zone: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("/shoal/zone/{zone}/1"))
}

/// The cluster-wide topic of task orders and progress.
fn tasks_topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new("/shoal/tasks/1")
}

/// `shoal/<version> zone=<zone> role=<role>`: identify's agent string carries locality.
fn agent(zone: &str, role: &str) -> String {
    format!(
        "shoal/{} zone={zone} role={role}",
        env!("CARGO_PKG_VERSION")
    )
}

fn parse_agent(agent: &str) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        agent
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    (field("zone="), field("role="))
}

/// How often lost peers are dialed again.
const MEND_EVERY: Duration = Duration::from_secs(5);
/// Bootstrap addresses are dialed again every this many mends (30 s).
const BOOTSTRAP_EVERY_MENDS: u64 = 6;
/// A node asks the DHT for its neighbours at its 1st, 2nd, 4th, … mend up to this one (the
/// first within 5 s of its start, then 5, 15, 35 and 75 s after it).
const YOUNG_MENDS: u64 = 16;
/// A peer whose next wait would pass this is forgotten (after 5 + 10 + … + 640 s ≈ 21 min).
const FORGET_AFTER_WAIT: Duration = Duration::from_secs(640);
/// At most this many lost peers are dialed per mend.
const MEND_DIALS: usize = 32;
/// A connection whose identify exchange fails is closed (to be dialed again) this many times.
const IDENTIFY_TRIES: u32 = 3;

/// The wait before dialing an unreachable peer again, after `previous`; `None`: forget it.
fn next_wait(previous: Option<Duration>) -> Option<Duration> {
    let wait = previous.map_or(MEND_EVERY, |w| w * 2);
    (wait <= FORGET_AFTER_WAIT).then_some(wait)
}

fn behaviour(key: &Keypair, config: &P2pConfig) -> Result<Behaviour, P2pError> {
    let peer_id = key.public().to_peer_id();
    let mut kad_config = kad::Config::new(StreamProtocol::new("/shoal/kad/1.0.0"));
    kad_config
        .set_query_timeout(Duration::from_secs(5))
        .set_provider_record_ttl(Some(Duration::from_secs(600)))
        .set_provider_publication_interval(Some(Duration::from_secs(300)));
    let store = MemoryStore::with_config(
        peer_id,
        MemoryStoreConfig {
            max_provided_keys: 100_000,
            max_providers_per_key: 100,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
    kad.set_mode(Some(kad::Mode::Server));

    let gossip_config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(proto::MAX_ANNOUNCEMENT_BYTES)
        .heartbeat_interval(Duration::from_millis(500))
        // Messages carry their author but no signature: every connection is already
        // authenticated and limited to holders of the swarm key, and verifying an ed25519
        // signature on every copy of every announcement was 4-5% of a node's CPU in the swarm
        // benchmark. A member could claim another's pieces; askers then get NOT_FOUND.
        .validation_mode(gossipsub::ValidationMode::Permissive)
        .build()
        .map_err(|e| P2pError::Transport(e.to_string()))?;
    let gossip = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Author(key.public().to_peer_id()),
        gossip_config,
    )
    .map_err(|e| P2pError::Transport(e.to_string()))?;

    Ok(Behaviour {
        blocked: Default::default(),
        identify: identify::Behaviour::new(
            identify::Config::new("/shoal/id/1.0.0".into(), key.public())
                .with_agent_version(agent(&config.zone, &config.role)),
        ),
        kad,
        gossip,
        // A peer that stops answering pings is disconnected: it must not stall pulls.
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_secs(2))
                .with_timeout(Duration::from_secs(5)),
        ),
        pieces: request_response::Behaviour::new(
            [(PIECE_PROTOCOL, ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        ),
    })
}

pub(super) async fn start(
    config: P2pConfig,
    service: Arc<dyn PieceService>,
) -> Result<P2p, P2pError> {
    let key = config.keypair.clone();
    let psk = config.swarm_key;
    let behaviour = behaviour(&key, &config)?;
    let transport = transport(&key, psk)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|_| transport)
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| P2pError::Transport(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Transport(format!("listen on {addr}: {e}")))?;
    }
    for t in [topic(&config.zone), tasks_topic()] {
        swarm
            .behaviour_mut()
            .gossip
            .subscribe(&t)
            .map_err(|e| P2pError::Transport(e.to_string()))?;
    }
    for addr in &config.bootstrap {
        dial(&mut swarm, addr.clone());
    }
    let peer_id = *swarm.local_peer_id();
    let bootstrap = config.bootstrap.clone();
    let (commands_tx, commands) = mpsc::channel(256);
    let (haves, _) = broadcast::channel(1024);
    let (tasks, _) = broadcast::channel(1024);
    let (responses_tx, responses) = mpsc::channel(256);
    let event_loop = EventLoop {
        swarm,
        commands,
        responses,
        responses_tx,
        sending: HashMap::new(),
        service,
        haves: haves.clone(),
        tasks: tasks.clone(),
        zone: config.zone.clone(),
        seed: config.role == "seed",
        zone_peering: config.zone_peering,
        bootstrap,
        mends: 0,
        unreachable: HashMap::new(),
        identify_failures: HashMap::new(),
        peers: HashMap::new(),
        pending_requests: HashMap::new(),
        pending_providers: HashMap::new(),
    };
    // Wait until the listeners are bound, so that `listen_addrs` is meaningful at once.
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(event_loop.run(config.listen.len(), ready_tx));
    let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
    Ok(P2p {
        peer_id,
        zone: config.zone,
        seed: config.role == "seed",
        zone_peering: config.zone_peering,
        commands: commands_tx,
        haves,
        tasks,
    })
}

/// The peer id an address ends with, if any.
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

fn banned(swarm: &Swarm<Behaviour>, peer: &PeerId) -> bool {
    swarm.behaviour().blocked.blocked_peers().contains(peer)
}

/// Dials a bootstrap address. One with a peer id is dialed only while that peer is neither
/// connected nor being dialed, and never when it is banned.
fn dial(swarm: &mut Swarm<Behaviour>, addr: Multiaddr) {
    let opts = match peer_of(&addr) {
        Some(peer) if banned(swarm, &peer) => return,
        Some(peer) => {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
            DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .build()
        }
        None => addr.clone().into(),
    };
    match swarm.dial(opts) {
        Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
        Err(e) => tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer"),
    }
}

/// A response ready to send: its request, channel, message and what it holds while sent.
type Answer = (
    InboundRequestId,
    ResponseChannel<proto::Response>,
    proto::Response,
    Option<Box<dyn std::any::Any + Send>>,
);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    responses: mpsc::Receiver<Answer>,
    responses_tx: mpsc::Sender<Answer>,
    /// What each response on the wire holds until it has been sent (see [`super::Outgoing`]).
    sending: HashMap<InboundRequestId, Box<dyn std::any::Any + Send>>,
    service: Arc<dyn PieceService>,
    haves: broadcast::Sender<(PeerId, Have)>,
    tasks: broadcast::Sender<(PeerId, proto::Task)>,
    zone: String,
    /// This node is a seed.
    seed: bool,
    /// Seeds of other zones may take pieces from this one (if it is a seed).
    zone_peering: bool,
    /// The `--bootstrap` addresses, dialed again while their peer is not connected.
    bootstrap: Vec<Multiaddr>,
    /// How many times [`Self::mend`] ran.
    mends: u64,
    /// Peers that could not be dialed: when to dial next, and the wait before that.
    unreachable: HashMap<PeerId, (Instant, Duration)>,
    /// Failed identify exchanges by peer, until one succeeds.
    identify_failures: HashMap<PeerId, u32>,
    peers: HashMap<PeerId, PeerInfo>,
    pending_requests:
        HashMap<OutboundRequestId, oneshot::Sender<Result<proto::Response, P2pError>>>,
    pending_providers: HashMap<QueryId, (HashSet<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
}

impl EventLoop {
    async fn run(mut self, listeners: usize, ready: oneshot::Sender<()>) {
        let mut ready = Some(ready);
        let mut bound = 0;
        if listeners == 0 {
            ready.take().map(|r| r.send(()));
        }
        // Nodes started together do not mend in step.
        let first = Duration::from_millis(rand::random_range(0..MEND_EVERY.as_millis() as u64));
        let mut mend = tokio::time::interval_at(tokio::time::Instant::now() + first, MEND_EVERY);
        mend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = mend.tick() => self.mend(),
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c),
                    // Every handle is gone: the node is shutting down.
                    None => break,
                },
                Some((id, channel, response, hold)) = self.responses.recv() => {
                    let sent = self.swarm.behaviour_mut().pieces.send_response(channel, response);
                    if let (Ok(()), Some(hold)) = (sent, hold) {
                        self.sending.insert(id, hold);
                    }
                }
                event = self.swarm.select_next_some() => {
                    if let SwarmEvent::NewListenAddr { address, .. } = &event {
                        tracing::info!(%address, "p2p listening");
                        bound += 1;
                        if bound >= listeners {
                            ready.take().map(|r| r.send(()));
                        }
                    }
                    self.event(event);
                }
            }
        }
    }

    /// Dials the peers of the routing table this node lost (a ping timeout, a network blip:
    /// neither side would dial again, and the zone's mesh would stay torn) and, with
    /// every [`BOOTSTRAP_EVERY_MENDS`], the `--bootstrap` addresses whose peer is not connected
    /// (a bootstrap node that restarted knows nobody; an address without a peer id is dialed
    /// only when alone).
    fn mend(&mut self) {
        self.mends += 1;
        // Nodes that start together can each ask the DHT before the others are in it (a
        // DaemonSet rollout starts hundreds at once) and would meet only at Kademlia's next
        // periodic bootstrap, 5 minutes later; while young, a node asks again.
        if self.mends.is_power_of_two() && self.mends <= YOUNG_MENDS {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        let lost: HashSet<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .filter(|e| e.status == kad::NodeStatus::Disconnected)
                    .map(|e| *e.node.key.preimage())
                    .collect::<Vec<_>>()
            })
            .collect();
        // Only peers still in the routing table and not connected are waited for.
        self.unreachable.retain(|peer, _| lost.contains(peer));
        let now = Instant::now();
        let due: Vec<PeerId> = lost
            .into_iter()
            .filter(|peer| !self.waiting(peer, now) && !banned(&self.swarm, peer))
            .take(MEND_DIALS)
            .collect();
        for peer in due {
            // Not while a dial runs or once connected: `PeerCondition::DisconnectedAndNotDialing`.
            let _ = self.swarm.dial(peer);
        }
        if !self.mends.is_multiple_of(BOOTSTRAP_EVERY_MENDS) {
            return;
        }
        let alone = self.swarm.connected_peers().next().is_none();
        // Every 30 s whatever the routing table's wait: a node may start before its bootstrap
        // peers.
        for addr in self.bootstrap.clone() {
            if alone || peer_of(&addr).is_some() {
                dial(&mut self.swarm, addr);
            }
        }
    }

    /// `peer` could not be dialed lately, and its wait has not passed.
    fn waiting(&self, peer: &PeerId, now: Instant) -> bool {
        self.unreachable
            .get(peer)
            .is_some_and(|(next, _)| now < *next)
    }

    /// A dial of `peer` failed: [`Self::mend`] waits twice as long as last time before the next
    /// one (5 s, 10 s, … 640 s), and a peer unreachable for about 21 minutes leaves the routing
    /// table (a node removed from the cluster; should it return, it dials in itself).
    fn unreachable(&mut self, peer: PeerId) {
        let now = Instant::now();
        // Other dials of the peer while it waits (Kademlia's queries, say) do not count.
        if self.waiting(&peer, now) {
            return;
        }
        match next_wait(self.unreachable.get(&peer).map(|(_, wait)| *wait)) {
            Some(wait) => {
                self.unreachable.insert(peer, (now + wait, wait));
            }
            None => {
                tracing::info!(%peer, "peer unreachable for 21 minutes; forgotten");
                self.unreachable.remove(&peer);
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
            }
        }
    }

    fn command(&mut self, command: Command) {
        let local = *self.swarm.local_peer_id();
        match command {
            Command::ListenAddrs(reply) => {
                let addrs = self
                    .swarm
                    .listeners()
                    .map(|a| a.clone().with_p2p(local).unwrap_or_else(|a| a))
                    .collect();
                let _ = reply.send(addrs);
            }
            Command::Peers(reply) => {
                let peers = self
                    .swarm
                    .connected_peers()
                    .map(|p| {
                        self.peers.get(p).cloned().unwrap_or(PeerInfo {
                            id: *p,
                            zone: None,
                            role: None,
                        })
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Dial(addr) => dial(&mut self.swarm, addr),
            Command::Provide(digest) => {
                let key = RecordKey::new(&digest.to_string());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    tracing::warn!(%digest, error = %e, "cannot provide");
                }
            }
            Command::StopProviding(digest) => {
                let key = RecordKey::new(&digest.to_string());
                self.swarm.behaviour_mut().kad.stop_providing(&key);
            }
            Command::Providers(digest, reply) => {
                let key = RecordKey::new(&digest.to_string());
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.pending_providers.insert(id, (HashSet::new(), reply));
            }
            Command::Request(peer, request, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .pieces
                    .send_request(&peer, request);
                self.pending_requests.insert(id, reply);
            }
            Command::PublishTask(task) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(tasks_topic(), task.encode_to_vec());
                if let Err(e) = result {
                    tracing::debug!(error = %e, "task message not published");
                }
            }
            Command::Announce(have) => {
                let msg = proto::Announcement {
                    kind: Some(proto::AnnouncementKind::Have(have)),
                };
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossip
                    .publish(topic(&self.zone), msg.encode_to_vec());
                // With no peer subscribed yet there is nobody to tell; that is fine.
                if let Err(e) = result {
                    tracing::debug!(error = %e, "announcement not published");
                }
            }
            Command::Ban(peer) => {
                tracing::warn!(%peer, "banning peer");
                self.swarm.behaviour_mut().blocked.block_peer(peer);
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                self.peers.remove(&peer);
            }
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                self.unreachable.remove(&peer_id);
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                self.peers.entry(peer_id).or_insert(PeerInfo {
                    id: peer_id,
                    zone: None,
                    role: None,
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.peers.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(?peer_id, %error, "connection failed");
                if let Some(peer) = peer_id
                    && !self.swarm.is_connected(&peer)
                {
                    self.unreachable(peer);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                self.identify_failures.remove(&peer_id);
                let (zone, role) = parse_agent(&info.agent_version);
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                self.peers.insert(
                    peer_id,
                    PeerInfo {
                        id: peer_id,
                        zone,
                        role,
                    },
                );
            }
            // Without identify a peer's zone stays unknown, and it gets no part in the zone's
            // pulls; the connection is closed so that one side dials again and both ask again,
            // a few times (a peer that never identifies stays connected, zone unknown).
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Error {
                peer_id,
                connection_id,
                error,
            })) if self.peers.get(&peer_id).is_none_or(|p| p.zone.is_none()) => {
                let failures = self.identify_failures.entry(peer_id).or_default();
                *failures += 1;
                if *failures <= IDENTIFY_TRIES {
                    tracing::debug!(%peer_id, %error, "identify failed; reconnecting");
                    self.swarm.close_connection(connection_id);
                } else {
                    tracing::warn!(%peer_id, %error, "identify keeps failing; its zone stays unknown");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(e),
                ..
            })) => {
                tracing::info!(%peer, error = %e, "peer stopped answering; disconnecting");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            // Peers learned from the DHT are dialed: within a zone the swarm is a mesh, so that
            // every node sees the same peers when it picks a blob's fetcher.
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated {
                peer, ..
            })) if !self.swarm.is_connected(&peer) => {
                let _ = self.swarm.dial(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => self.query_progress(id, result, step.last),
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            })) => {
                if message.topic == tasks_topic().hash() {
                    let from = message.source.unwrap_or(propagation_source);
                    if let Ok(task) = proto::Task::decode(message.data.as_slice()) {
                        let _ = self.tasks.send((from, task));
                    }
                } else if let Ok(proto::Announcement {
                    kind: Some(proto::AnnouncementKind::Have(have)),
                }) = proto::Announcement::decode(message.data.as_slice())
                {
                    let from = message.source.unwrap_or(propagation_source);
                    // Only peers known to be of this zone are listened to.
                    let zone = self.peers.get(&from).and_then(|p| p.zone.as_deref());
                    if zone == Some(self.zone.as_str()) {
                        let _ = self.haves.send((from, have));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Pieces(event)) => self.pieces_event(event),
            _ => {}
        }
    }

    fn query_progress(&mut self, id: QueryId, result: QueryResult, last: bool) {
        let QueryResult::GetProviders(result) = result else {
            return;
        };
        let local = *self.swarm.local_peer_id();
        let Some((found, _)) = self.pending_providers.get_mut(&id) else {
            return;
        };
        if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = result {
            found.extend(providers.into_iter().filter(|p| *p != local));
        }
        // Answer with the first providers found rather than after the whole walk: a download
        // needs a few sources now, not every source later.
        if (last || !found.is_empty())
            && let Some((found, reply)) = self.pending_providers.remove(&id)
        {
            let _ = reply.send(found.into_iter().collect());
        }
    }

    fn pieces_event(&mut self, event: request_response::Event<proto::Request, proto::Response>) {
        use request_response::{Event, Message as RrMessage};
        match event {
            Event::Message {
                peer,
                message:
                    RrMessage::Request {
                        request_id,
                        request,
                        channel,
                    },
                ..
            } => {
                let asker = self.peers.get(&peer);
                let same_zone = asker.and_then(|p| p.zone.as_deref()) == Some(self.zone.as_str());
                // Between zones, only seeds exchange pieces, and only where allowed.
                let peering =
                    self.zone_peering && self.seed && asker.is_some_and(PeerInfo::is_seed);
                if !same_zone && !peering {
                    let refusal = proto::Response::error(
                        ErrorCode::Refused,
                        "pieces are exchanged within a zone only",
                    );
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .pieces
                        .send_response(channel, refusal);
                    return;
                }
                let service = self.service.clone();
                let responses = self.responses_tx.clone();
                tokio::spawn(async move {
                    let (response, hold) = answer(service.as_ref(), peer, request).await;
                    let _ = responses.send((request_id, channel, response, hold)).await;
                });
            }
            Event::Message {
                message:
                    RrMessage::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending_requests.remove(&request_id) {
                    let _ = reply.send(Err(P2pError::Peer {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                self.sending.remove(&request_id);
                tracing::debug!(%peer, %error, "inbound piece request failed");
            }
            Event::ResponseSent { request_id, .. } => {
                self.sending.remove(&request_id);
            }
        }
    }
}

/// Answers one piece-protocol request through the node's service.
async fn answer(
    service: &dyn PieceService,
    from: PeerId,
    request: proto::Request,
) -> (proto::Response, Option<Box<dyn std::any::Any + Send>>) {
    let bad = |m: &str| (proto::Response::error(ErrorCode::BadRequest, m), None);
    match request.kind {
        Some(proto::RequestKind::Map(m)) => {
            let Ok(digest) = m.digest.parse::<Digest>() else {
                return bad("malformed digest");
            };
            let hint = if m.registry.is_empty() {
                None
            } else {
                match (m.registry.parse(), m.repository.parse()) {
                    (Ok(registry), Ok(repository)) => Some(super::FetchHint {
                        registry,
                        repository,
                        url: (!m.url.is_empty()).then_some(m.url),
                    }),
                    _ => return bad("malformed fetch hint"),
                }
            };
            let response = match service.piece_map(digest, hint).await {
                Some(map) => proto::Response {
                    kind: Some(proto::ResponseKind::Map(map)),
                },
                None => proto::Response::error(ErrorCode::NotFound, "blob not held"),
            };
            (response, None)
        }
        Some(proto::RequestKind::Piece(p)) => {
            let Ok(digest) = p.digest.parse::<Digest>() else {
                return bad("malformed digest");
            };
            match service.piece(from, digest, p.index).await {
                Ok(out) => (
                    proto::Response {
                        kind: Some(proto::ResponseKind::Piece(proto::Piece {
                            digest: p.digest,
                            index: p.index,
                            data: out.data,
                        })),
                    },
                    out.hold,
                ),
                Err(code) => (proto::Response::error(code, "piece not served"), None),
            }
        }
        Some(proto::RequestKind::File(f)) => {
            if f.id.len() != 64 || !f.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad("malformed file identity");
            }
            let url = (!f.url.is_empty()).then_some(f.url);
            let response = match service.file_lookup(f.id, url).await {
                Some(a) => proto::Response {
                    kind: Some(proto::ResponseKind::File(a)),
                },
                None => proto::Response::error(ErrorCode::NotFound, "file not known"),
            };
            (response, None)
        }
        None => bad("empty request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_string_carries_zone_and_role() {
        assert_eq!(
            parse_agent(&agent("eu-1", "seed")),
            (Some("eu-1".into()), Some("seed".into()))
        );
        assert_eq!(parse_agent("rust-libp2p/0.1"), (None, None));
    }

    #[test]
    fn an_unreachable_peer_is_dialed_less_and_less_then_forgotten() {
        let mut waits = Vec::new();
        let mut wait = None;
        while let Some(w) = next_wait(wait) {
            waits.push(w.as_secs());
            wait = Some(w);
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640]);
        // Forgotten after about 21 minutes.
        assert_eq!(waits.iter().sum::<u64>(), 1275);
    }
}
