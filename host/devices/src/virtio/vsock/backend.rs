//! The vsock backend thread: a poll loop over the host listener, the host streams and a
//! waker, moving packets between the virtqueues and host Unix sockets.
//!
//! With the `fuzzing` feature there is no thread: each kick runs one round of the loop on
//! the kicking thread, polling for events without waiting.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT, Reader, Writer};

use super::packet::*;
use super::{HOST_CID, MAX_CONNECTIONS, MAX_PKT_PAYLOAD, TX_BUF_SIZE};
use crate::virtio::VirtioInterrupt;
use crate::GuestMemory;

const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const FIRST_STREAM_TOKEN: usize = 2;

/// How long a host client may take to write its `CONNECT <port>\n` line.
const CONNECT_LINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the guest may take to answer a host-initiated connection request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a device being dropped keeps writing what the guest already sent to host
/// sockets that are slow to take it.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest `CONNECT <port>\n` line accepted.
const CONNECT_LINE_MAX: usize = 32;
/// First local port handed to host-initiated streams (Firecracker's choice too).
const FIRST_LOCAL_PORT: u32 = 1 << 30;
/// While this many control packets wait for rx buffers, guest packets are not processed
/// (back-pressure on a guest that sends but never reads).
const CTRL_QUEUE_SOFT_CAP: usize = 256;
/// Control packets beyond this are dropped (a last bound; the soft cap normally holds).
const CTRL_QUEUE_HARD_CAP: usize = 4 * MAX_CONNECTIONS;

/// What the backend thread needs from the device.
pub(super) struct Config {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    pub listener: std::os::unix::net::UnixListener,
}

/// The running backend thread of an activated device.
pub(super) struct BackendHandle {
    thread: Option<JoinHandle<()>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    /// `fuzzing`: the backend, run by [`BackendHandle::kick`] itself.
    #[cfg(feature = "fuzzing")]
    inline: Option<std::sync::Mutex<(Backend, Events)>>,
}

impl BackendHandle {
    /// Starts the backend thread with the device's three queues (rx, tx, event).
    pub fn spawn(
        config: Config,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queues: [Queue; 3],
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listener = UnixListener::from_std(config.listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let registry = poll.registry().try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let drain = Arc::new(AtomicBool::new(false));
        let [rxq, txq, evq] = queues;
        #[cfg_attr(feature = "fuzzing", allow(unused_mut))]
        let mut backend = Backend {
            mem,
            interrupt,
            rxq,
            txq,
            _evq: evq,
            poll,
            stop: stop.clone(),
            drain: drain.clone(),
            broken: false,
            scratch: vec![0; MAX_PKT_PAYLOAD],
            mux: Muxer {
                guest_cid: config.guest_cid,
                uds_path: config.uds_path,
                registry,
                listener,
                hosts: HashMap::new(),
                conns: HashMap::new(),
                tokens: HashMap::new(),
                order: VecDeque::new(),
                ctrl: VecDeque::new(),
                next_token: FIRST_STREAM_TOKEN,
                next_local_port: FIRST_LOCAL_PORT,
            },
        };
        #[cfg(feature = "fuzzing")]
        return Ok(BackendHandle {
            thread: None,
            waker,
            stop,
            drain,
            inline: Some(std::sync::Mutex::new((backend, Events::with_capacity(256)))),
        });
        #[cfg(not(feature = "fuzzing"))]
        {
            let thread = std::thread::Builder::new()
                .name("vsock".into())
                .spawn(move || backend.run())?;
            Ok(BackendHandle {
                thread: Some(thread),
                waker,
                stop,
                drain,
            })
        }
    }

    /// Wakes the thread: the guest made buffers or packets available.
    pub fn kick(&self) {
        #[cfg(feature = "fuzzing")]
        if let Some(inline) = &self.inline {
            let (backend, events) = &mut *inline.lock().unwrap_or_else(|e| e.into_inner());
            backend.round(events, Some(Duration::ZERO));
            return;
        }
        if let Err(e) = self.waker.wake() {
            tracing::error!("vsock: cannot wake the backend thread: {e}");
        }
    }

    /// Stops the thread and waits for it; every stream is closed.
    ///
    /// With `drain` (the VM is going away, its memory is still intact), packets the guest
    /// already queued are handled and buffered data is written to the host sockets first,
    /// for at most [`FINAL_FLUSH_TIMEOUT`]. Without it (a driver reset, after which the
    /// guest may reuse the rings' memory) guest memory is not touched again.
    pub fn stop(mut self, drain: bool) {
        self.drain.store(drain, Ordering::SeqCst);
        self.shutdown();
    }

    fn shutdown(&mut self) {
        #[cfg(feature = "fuzzing")]
        if let Some(inline) = self.inline.take() {
            let (mut backend, mut events) = inline.into_inner().unwrap_or_else(|e| e.into_inner());
            if self.drain.load(Ordering::SeqCst) {
                backend.final_flush(&mut events);
            }
        }
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            self.kick();
            if thread.join().is_err() {
                tracing::error!("vsock: the backend thread panicked");
            }
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Backend {
    mem: GuestMemory,
    interrupt: Arc<VirtioInterrupt>,
    rxq: Queue,
    txq: Queue,
    _evq: Queue,
    poll: Poll,
    stop: Arc<AtomicBool>,
    drain: Arc<AtomicBool>,
    /// The guest corrupted a queue: nothing moves until the driver resets the device.
    broken: bool,
    scratch: Vec<u8>,
    mux: Muxer,
}

impl Backend {
    #[cfg_attr(feature = "fuzzing", allow(dead_code))]
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        tracing::debug!(cid = self.mux.guest_cid, "vsock: backend started");
        loop {
            let timeout = self
                .mux
                .has_deadlines()
                .then_some(Duration::from_millis(250));
            if !self.round(&mut events, timeout) {
                break;
            }
        }
        tracing::debug!(cid = self.mux.guest_cid, "vsock: backend stopped");
    }

    /// One round of the loop: waits up to `timeout` for events, handles them and moves
    /// packets. Returns false when the backend stops.
    fn round(&mut self, events: &mut Events, timeout: Option<Duration>) -> bool {
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("vsock: poll failed, stopping the device backend: {e}");
                return false;
            }
        }
        if self.stop.load(Ordering::SeqCst) {
            if self.drain.load(Ordering::SeqCst) {
                self.final_flush(events);
            }
            return false;
        }
        for event in events.iter() {
            match event.token() {
                WAKER => {}
                LISTENER => self.mux.accept_all(),
                token => self.mux.on_stream_event(token, event),
            }
        }
        self.work();
        true
    }

    /// Handles what the guest already sent and writes it to the host sockets, waiting for
    /// slow sockets up to [`FINAL_FLUSH_TIMEOUT`].
    fn final_flush(&mut self, events: &mut Events) {
        let deadline = Instant::now() + FINAL_FLUSH_TIMEOUT;
        self.process_tx();
        loop {
            self.mux.service_all();
            let now = Instant::now();
            if now >= deadline || self.mux.conns.values().all(Conn::tx_empty) {
                break;
            }
            if self.poll.poll(events, Some(deadline - now)).is_ok() {
                for event in events.iter() {
                    if !matches!(event.token(), WAKER | LISTENER) {
                        self.mux.on_stream_event(event.token(), event);
                    }
                }
            }
        }
    }

    /// Moves packets until nothing more can be done without a new event.
    fn work(&mut self) {
        let now = Instant::now();
        self.mux.expire(now);
        // Every pass either consumes guest descriptor chains or stops; a guest can only
        // make this run as long as it keeps supplying work.
        loop {
            let tx_used = self.process_tx();
            self.mux.service_all();
            let rx_used = self.fill_rx(now);
            if tx_used {
                self.notify(QueueKind::Tx);
            }
            if rx_used {
                self.notify(QueueKind::Rx);
            }
            if !tx_used && !rx_used {
                break;
            }
        }
    }

    fn notify(&mut self, kind: QueueKind) {
        let q = match kind {
            QueueKind::Rx => &mut self.rxq,
            QueueKind::Tx => &mut self.txq,
        };
        if q.needs_notification(&self.mem).unwrap_or(true) {
            if let Err(e) = self.interrupt.signal_used_queue() {
                tracing::error!("vsock: cannot interrupt the guest: {e}");
            }
        }
    }

    /// Handles the packets the guest sent. Returns whether any chain was used.
    fn process_tx(&mut self) -> bool {
        let mut used = false;
        while self.mux.ctrl.len() < CTRL_QUEUE_SOFT_CAP {
            let Some(chain) = pop(&mut self.txq, &self.mem, &self.interrupt, &mut self.broken)
            else {
                break;
            };
            let head = chain.head_index();
            match Reader::new(&self.mem, chain) {
                Ok(mut reader) => self.mux.handle_guest_packet(&mut reader, &mut self.scratch),
                Err(e) => tracing::debug!("vsock: dropping a tx chain the guest malformed: {e}"),
            }
            if let Err(e) = self.txq.add_used(&self.mem, head, 0) {
                tracing::warn!("vsock: cannot return tx chain {head}: {e}");
            }
            used = true;
        }
        used
    }

    /// Fills rx buffers with packets for the guest. Returns whether any chain was used.
    fn fill_rx(&mut self, now: Instant) -> bool {
        let mut used = false;
        loop {
            if !self.mux.may_have_rx() {
                break;
            }
            let Some(chain) = pop(&mut self.rxq, &self.mem, &self.interrupt, &mut self.broken)
            else {
                break;
            };
            let head = chain.head_index();
            let mut writer = match Writer::new(&self.mem, chain) {
                Ok(w) if w.available_bytes() >= HDR_SIZE => w,
                Ok(_) => {
                    tracing::debug!("vsock: rx chain {head} is too small for a header; dropped");
                    let _ = self.rxq.add_used(&self.mem, head, 0);
                    used = true;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("vsock: dropping an rx chain the guest malformed: {e}");
                    let _ = self.rxq.add_used(&self.mem, head, 0);
                    used = true;
                    continue;
                }
            };
            let cap = (writer.available_bytes() - HDR_SIZE).min(MAX_PKT_PAYLOAD);
            let Some((hdr, len)) = self.mux.next_rx(&mut self.scratch[..cap], now) else {
                self.rxq.go_to_previous_position();
                break;
            };
            let written = writer
                .write_all(&hdr.encode())
                .and_then(|()| writer.write_all(&self.scratch[..len]));
            let used_len = match written {
                Ok(()) => (HDR_SIZE + len) as u32,
                Err(e) => {
                    tracing::debug!("vsock: cannot write an rx packet to guest memory: {e}");
                    0
                }
            };
            if let Err(e) = self.rxq.add_used(&self.mem, head, used_len) {
                tracing::warn!("vsock: cannot return rx chain {head}: {e}");
            }
            used = true;
        }
        used
    }
}

/// The next available chain of `q`. A queue the guest corrupted (an avail index more
/// than a queue size ahead, rings outside memory) marks the device as needing a reset.
fn pop<'m>(
    q: &mut Queue,
    mem: &'m GuestMemory,
    interrupt: &VirtioInterrupt,
    broken: &mut bool,
) -> Option<DescriptorChain<&'m GuestMemory>> {
    if *broken {
        return None;
    }
    match q.iter(mem) {
        Ok(mut chains) => chains.next(),
        Err(e) => {
            tracing::error!("vsock: the guest corrupted a queue ({e}); the device needs a reset");
            *broken = true;
            interrupt.set_needs_reset();
            None
        }
    }
}

#[derive(Clone, Copy)]
enum QueueKind {
    Rx,
    Tx,
}

/// `(local_port, peer_port)`: the host-side port and the guest-side port of a stream.
type ConnKey = (u32, u32);

/// A host client that connected to the listener and has not finished its `CONNECT` line.
struct HostPending {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Host-initiated: the REQUEST is queued or sent; waiting for the guest's RESPONSE.
    LocalInit,
    /// Data flows (a guest-initiated stream may still owe the guest its RESPONSE).
    Established,
}

/// What to do with a stream after a state change.
enum Disposition {
    Keep,
    /// Send RST to the guest and close the host socket.
    Reset,
    /// Both directions finished: tell the guest with SHUTDOWN(RCV|SEND), close the host
    /// socket. The guest answers with RST or SHUTDOWN; the latter gets an RST back.
    Finish,
    /// Close the host socket, tell the guest nothing.
    Drop,
}

struct Conn {
    stream: UnixStream,
    token: Token,
    local_port: u32,
    peer_port: u32,
    state: ConnState,
    /// The guest has been told about this stream (REQUEST sent or guest-initiated).
    guest_knows: bool,
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    /// Shutdown flags owed to the guest.
    send_shutdown: u32,
    deadline: Option<Instant>,
    /// The `OK <port>\n` line still to write to a host-initiated client.
    ok_line: Vec<u8>,

    // host -> guest
    readable: bool,
    host_eof: bool,
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    credit_requested: bool,

    // guest -> host
    writable: bool,
    tx_buf: VecDeque<u8>,
    fwd_cnt: u32,
    recv_cnt: u32,
    last_fwd_cnt_sent: u32,
    /// Shutdown flags the guest sent.
    guest_shut: u32,
    host_write_shut: bool,
}

impl Conn {
    fn new(stream: UnixStream, token: Token, local_port: u32, peer_port: u32) -> Self {
        Conn {
            stream,
            token,
            local_port,
            peer_port,
            state: ConnState::LocalInit,
            guest_knows: false,
            send_request: false,
            send_response: false,
            send_credit_update: false,
            send_shutdown: 0,
            deadline: None,
            ok_line: Vec::new(),
            readable: true,
            host_eof: false,
            rx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            credit_requested: false,
            writable: true,
            tx_buf: VecDeque::new(),
            fwd_cnt: 0,
            recv_cnt: 0,
            last_fwd_cnt_sent: 0,
            guest_shut: 0,
            host_write_shut: false,
        }
    }

    /// Bytes the guest can still take on this stream.
    fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn header(&mut self, guest_cid: u64, op: u16, flags: u32, len: u32) -> Header {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        Header {
            src_cid: HOST_CID,
            dst_cid: guest_cid,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: TX_BUF_SIZE,
            fwd_cnt: self.fwd_cnt,
        }
    }

    fn tx_empty(&self) -> bool {
        self.tx_buf.is_empty() && self.ok_line.is_empty()
    }

    /// Writes what is buffered for the host socket, as far as it takes it.
    fn flush(&mut self) -> io::Result<()> {
        while self.writable && !self.ok_line.is_empty() {
            match (&self.stream).write(&self.ok_line) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.ok_line.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let before = self.fwd_cnt;
        while self.writable && self.ok_line.is_empty() && !self.tx_buf.is_empty() {
            let (front, _) = self.tx_buf.as_slices();
            match (&self.stream).write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_buf.drain(..n);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.fwd_cnt != before {
            // The guest's view of our free space is what we last told it; refresh it once
            // that view drops below half, so a guest waiting for credit is never stuck.
            let seen_in_flight = self.recv_cnt.wrapping_sub(self.last_fwd_cnt_sent);
            if TX_BUF_SIZE.saturating_sub(seen_in_flight) < TX_BUF_SIZE / 2 {
                self.send_credit_update = true;
            }
        }
        Ok(())
    }

    /// Flushes, propagates a guest write shutdown, and says what happens to the stream.
    fn service(&mut self) -> Disposition {
        if self.flush().is_err() {
            return Disposition::Reset;
        }
        if self.state != ConnState::Established {
            return Disposition::Keep;
        }
        if self.guest_shut & SHUTDOWN_SEND != 0 && self.tx_empty() && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        if self.guest_shut == SHUTDOWN_BOTH && self.tx_empty() {
            // The guest closed its socket and everything it sent reached the host.
            return Disposition::Reset;
        }
        if self.host_eof && self.guest_shut & SHUTDOWN_SEND != 0 && self.tx_empty() {
            return Disposition::Finish;
        }
        Disposition::Keep
    }

    fn wants_to_read(&self) -> bool {
        self.state == ConnState::Established
            && !self.send_response
            && !self.host_eof
            && self.guest_shut & SHUTDOWN_RCV == 0
            && self.readable
    }

    /// Whether this stream might have a packet for the guest.
    fn may_have_rx(&self) -> bool {
        self.send_request
            || self.send_response
            || self.send_credit_update
            || self.send_shutdown != 0
            || (self.wants_to_read() && (self.peer_credit() > 0 || !self.credit_requested))
    }

    /// The next packet for the guest, its payload read into `buf`.
    fn next_rx(&mut self, guest_cid: u64, buf: &mut [u8], now: Instant) -> RxOutcome {
        if self.send_request {
            self.send_request = false;
            self.guest_knows = true;
            self.deadline = Some(now + REQUEST_TIMEOUT);
            return RxOutcome::Packet(self.header(guest_cid, OP_REQUEST, 0, 0), 0);
        }
        if self.send_response {
            self.send_response = false;
            return RxOutcome::Packet(self.header(guest_cid, OP_RESPONSE, 0, 0), 0);
        }
        if self.wants_to_read() {
            let credit = self.peer_credit();
            if credit == 0 {
                if !self.credit_requested {
                    self.credit_requested = true;
                    return RxOutcome::Packet(self.header(guest_cid, OP_CREDIT_REQUEST, 0, 0), 0);
                }
            } else if !buf.is_empty() {
                let n = buf.len().min(credit as usize);
                match (&self.stream).read(&mut buf[..n]) {
                    Ok(0) => {
                        self.host_eof = true;
                        self.send_shutdown |= SHUTDOWN_SEND;
                    }
                    Ok(k) => {
                        self.rx_cnt = self.rx_cnt.wrapping_add(k as u32);
                        return RxOutcome::Packet(self.header(guest_cid, OP_RW, 0, k as u32), k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(
                            port = self.local_port,
                            "vsock: host stream read failed: {e}"
                        );
                        return RxOutcome::Reset;
                    }
                }
            }
        }
        if self.send_credit_update {
            self.send_credit_update = false;
            return RxOutcome::Packet(self.header(guest_cid, OP_CREDIT_UPDATE, 0, 0), 0);
        }
        if self.send_shutdown != 0 {
            let flags = std::mem::take(&mut self.send_shutdown);
            return RxOutcome::Packet(self.header(guest_cid, OP_SHUTDOWN, flags, 0), 0);
        }
        RxOutcome::Nothing
    }
}

enum RxOutcome {
    Nothing,
    Packet(Header, usize),
    Reset,
}

struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    registry: Registry,
    listener: UnixListener,
    hosts: HashMap<Token, HostPending>,
    conns: HashMap<ConnKey, Conn>,
    tokens: HashMap<Token, ConnKey>,
    /// Round-robin order of the streams for rx.
    order: VecDeque<ConnKey>,
    /// Packets for the guest that belong to no live stream (RSTs, final SHUTDOWNs).
    ctrl: VecDeque<Header>,
    next_token: usize,
    next_local_port: u32,
}

impl Muxer {
    fn has_deadlines(&self) -> bool {
        !self.hosts.is_empty() || self.conns.values().any(|c| c.deadline.is_some())
    }

    fn stream_count(&self) -> usize {
        self.hosts.len() + self.conns.len()
    }

    fn new_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_STREAM_TOKEN);
        t
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.stream_count() >= MAX_CONNECTIONS {
                        tracing::warn!("vsock: too many streams; refusing a host connection");
                        continue;
                    }
                    let token = self.new_token();
                    if let Err(e) = self.registry.register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::error!("vsock: cannot watch a host connection: {e}");
                        continue;
                    }
                    self.hosts.insert(
                        token,
                        HostPending {
                            stream,
                            line: Vec::new(),
                            deadline: Instant::now() + CONNECT_LINE_TIMEOUT,
                        },
                    );
                    self.read_connect_line(token);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("vsock: accept on the host socket failed: {e}");
                    break;
                }
            }
        }
    }

    fn on_stream_event(&mut self, token: Token, event: &mio::event::Event) {
        if self.hosts.contains_key(&token) {
            self.read_connect_line(token);
            return;
        }
        let Some(key) = self.tokens.get(&token) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(key) {
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                conn.readable = true;
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                conn.writable = true;
            }
        }
    }

    /// Reads the `CONNECT <port>\n` line byte by byte (so no stream data is consumed).
    fn read_connect_line(&mut self, token: Token) {
        let Some(host) = self.hosts.get_mut(&token) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match (&host.stream).read(&mut byte) {
                Ok(0) => break None,
                Ok(_) if byte[0] == b'\n' => break parse_connect(&host.line),
                Ok(_) if host.line.len() >= CONNECT_LINE_MAX => break None,
                Ok(_) => host.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let Some(mut host) = self.hosts.remove(&token) else {
            return;
        };
        let Some(peer_port) = port else {
            tracing::debug!(
                line = %String::from_utf8_lossy(&host.line),
                "vsock: host client sent no valid CONNECT line; closed"
            );
            let _ = self.registry.deregister(&mut host.stream);
            return;
        };
        let Some(local_port) = self.alloc_local_port(peer_port) else {
            let _ = self.registry.deregister(&mut host.stream);
            return;
        };
        let mut conn = Conn::new(host.stream, token, local_port, peer_port);
        conn.send_request = true;
        self.insert_conn(conn);
    }

    fn alloc_local_port(&mut self, peer_port: u32) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let p = self.next_local_port;
            self.next_local_port = p.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(p, peer_port)) {
                return Some(p);
            }
        }
        None
    }

    fn insert_conn(&mut self, conn: Conn) {
        let key = (conn.local_port, conn.peer_port);
        self.tokens.insert(conn.token, key);
        self.order.push_back(key);
        self.conns.insert(key, conn);
    }

    fn remove_conn(&mut self, key: ConnKey) -> Option<Conn> {
        let mut conn = self.conns.remove(&key)?;
        self.tokens.remove(&conn.token);
        self.order.retain(|k| *k != key);
        let _ = self.registry.deregister(&mut conn.stream);
        Some(conn)
    }

    fn push_ctrl(&mut self, hdr: Header) {
        if self.ctrl.len() >= CTRL_QUEUE_HARD_CAP {
            tracing::debug!("vsock: the guest reads no packets; dropping a control packet");
            return;
        }
        self.ctrl.push_back(hdr);
    }

    fn ctrl_packet(&self, local_port: u32, peer_port: u32, op: u16, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local_port,
            dst_port: peer_port,
            type_: TYPE_STREAM,
            op,
            flags,
            ..Header::default()
        }
    }

    fn reply_rst(&mut self, hdr: &Header) {
        if hdr.op != OP_RST {
            let rst = self.ctrl_packet(hdr.dst_port, hdr.src_port, OP_RST, 0);
            self.push_ctrl(rst);
        }
    }

    /// Closes a stream, telling the guest as the disposition says.
    fn close(&mut self, key: ConnKey, how: Disposition) {
        let Some(conn) = self.remove_conn(key) else {
            return;
        };
        let op = match how {
            Disposition::Keep => {
                // Not a close after all: put it back untouched.
                self.insert_conn(conn);
                return;
            }
            Disposition::Reset if conn.guest_knows => Some((OP_RST, 0)),
            Disposition::Finish => Some((OP_SHUTDOWN, SHUTDOWN_BOTH)),
            Disposition::Reset | Disposition::Drop => None,
        };
        if let Some((op, flags)) = op {
            let hdr = self.ctrl_packet(conn.local_port, conn.peer_port, op, flags);
            self.push_ctrl(hdr);
        }
        tracing::debug!(
            local_port = conn.local_port,
            peer_port = conn.peer_port,
            "vsock: stream closed"
        );
    }

    /// Drops host clients and requests that took too long.
    fn expire(&mut self, now: Instant) {
        let late: Vec<Token> = self
            .hosts
            .iter()
            .filter(|(_, h)| h.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(mut h) = self.hosts.remove(&t) {
                tracing::debug!("vsock: host client sent no CONNECT line in time; closed");
                let _ = self.registry.deregister(&mut h.stream);
            }
        }
        let late: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            tracing::debug!(
                port = key.1,
                "vsock: the guest did not answer a connection request in time"
            );
            self.close(key, Disposition::Reset);
        }
    }

    fn service_all(&mut self) {
        let keys: Vec<ConnKey> = self.order.iter().copied().collect();
        for key in keys {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            match conn.service() {
                Disposition::Keep => {}
                how => self.close(key, how),
            }
        }
    }

    fn may_have_rx(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(Conn::may_have_rx)
    }

    /// The next packet for the guest, payload in `buf`; `None` when there is nothing now.
    fn next_rx(&mut self, buf: &mut [u8], now: Instant) -> Option<(Header, usize)> {
        if let Some(hdr) = self.ctrl.pop_front() {
            return Some((hdr, 0));
        }
        for i in 0..self.order.len() {
            let key = self.order[i];
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            match conn.next_rx(self.guest_cid, buf, now) {
                RxOutcome::Nothing => {
                    // A host EOF may have finished the stream.
                    if let how @ (Disposition::Reset | Disposition::Finish) = conn.service() {
                        self.close(key, how);
                        return self.ctrl.pop_front().map(|h| (h, 0));
                    }
                }
                RxOutcome::Packet(hdr, len) => {
                    // Round robin: this stream goes to the back.
                    if let Some(k) = self.order.remove(i) {
                        self.order.push_back(k);
                    }
                    return Some((hdr, len));
                }
                RxOutcome::Reset => {
                    self.close(key, Disposition::Reset);
                    return self.ctrl.pop_front().map(|h| (h, 0));
                }
            }
        }
        None
    }

    /// Handles one packet from the guest's tx queue.
    fn handle_guest_packet(&mut self, reader: &mut Reader<'_>, scratch: &mut [u8]) {
        let mut raw = [0u8; HDR_SIZE];
        if reader.available_bytes() < HDR_SIZE || reader.read_exact(&mut raw).is_err() {
            tracing::debug!("vsock: dropping a tx packet shorter than its header");
            return;
        }
        let hdr = Header::decode(&raw);
        if hdr.src_cid != self.guest_cid {
            tracing::debug!(
                src_cid = hdr.src_cid,
                "vsock: dropping a tx packet with a wrong source CID"
            );
            return;
        }
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            tracing::debug!(
                dst_cid = hdr.dst_cid,
                type_ = hdr.type_,
                "vsock: refusing a packet for another CID or socket type"
            );
            self.reply_rst(&hdr);
            return;
        }
        let len = hdr.len as usize;
        if len > MAX_PKT_PAYLOAD || len > reader.available_bytes() {
            tracing::debug!(
                len,
                "vsock: tx packet length exceeds its buffer; stream reset"
            );
            if self.conns.contains_key(&key) {
                self.close(key, Disposition::Reset);
            } else {
                self.reply_rst(&hdr);
            }
            return;
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            match hdr.op {
                OP_REQUEST => self.guest_connect(&hdr),
                OP_RST => {}
                _ => self.reply_rst(&hdr),
            }
            return;
        };
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = hdr.fwd_cnt;
        if conn.peer_credit() > 0 {
            conn.credit_requested = false;
        }
        let how = match hdr.op {
            OP_RESPONSE if conn.state == ConnState::LocalInit && conn.guest_knows => {
                conn.state = ConnState::Established;
                conn.deadline = None;
                conn.ok_line = format!("OK {}\n", conn.local_port).into_bytes();
                Disposition::Keep
            }
            OP_RST => Disposition::Drop,
            OP_SHUTDOWN if conn.state == ConnState::Established => {
                conn.guest_shut |= hdr.flags & SHUTDOWN_BOTH;
                Disposition::Keep
            }
            OP_RW
                if conn.state == ConnState::Established && conn.guest_shut & SHUTDOWN_SEND == 0 =>
            {
                if conn.tx_buf.len() + len > TX_BUF_SIZE as usize {
                    tracing::debug!(
                        port = conn.local_port,
                        "vsock: the guest sent beyond its credit; stream reset"
                    );
                    Disposition::Reset
                } else {
                    let data = &mut scratch[..len];
                    match reader.read_exact(data) {
                        Ok(()) => {
                            conn.tx_buf.extend(data.iter());
                            conn.recv_cnt = conn.recv_cnt.wrapping_add(len as u32);
                            Disposition::Keep
                        }
                        Err(_) => Disposition::Reset,
                    }
                }
            }
            OP_CREDIT_UPDATE if conn.state == ConnState::Established => Disposition::Keep,
            OP_CREDIT_REQUEST if conn.state == ConnState::Established => {
                conn.send_credit_update = true;
                Disposition::Keep
            }
            op => {
                tracing::debug!(op, state = ?conn.state, "vsock: unexpected packet; stream reset");
                Disposition::Reset
            }
        };
        match how {
            Disposition::Keep => {
                // Write what we can right away; the rest waits for the socket.
                if let how @ (Disposition::Reset | Disposition::Finish) = conn.service() {
                    self.close(key, how);
                }
            }
            how => self.close(key, how),
        }
    }

    /// The guest connects to host port `hdr.dst_port`: connect to `<uds_path>_<port>`.
    fn guest_connect(&mut self, hdr: &Header) {
        if self.stream_count() >= MAX_CONNECTIONS {
            tracing::debug!("vsock: too many streams; refusing a guest connection");
            self.reply_rst(hdr);
            return;
        }
        let mut path = OsString::from(self.uds_path.as_os_str());
        path.push(format!("_{}", hdr.dst_port));
        let mut stream = match UnixStream::connect(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path = %PathBuf::from(&path).display(), "vsock: guest connection refused: {e}");
                self.reply_rst(hdr);
                return;
            }
        };
        let token = self.new_token();
        if let Err(e) =
            self.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::error!("vsock: cannot watch a host stream: {e}");
            self.reply_rst(hdr);
            return;
        }
        let mut conn = Conn::new(stream, token, hdr.dst_port, hdr.src_port);
        conn.state = ConnState::Established;
        conn.guest_knows = true;
        conn.send_response = true;
        conn.peer_buf_alloc = hdr.buf_alloc;
        conn.peer_fwd_cnt = hdr.fwd_cnt;
        self.insert_conn(conn);
    }
}

/// Parses `CONNECT <port>` (an optional trailing `\r` allowed).
fn parse_connect(line: &[u8]) -> Option<u32> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let port = line.strip_prefix("CONNECT ")?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_connect;

    #[test]
    fn connect_line_parsing() {
        assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
        assert_eq!(parse_connect(b"CONNECT 4294967295\r"), Some(u32::MAX));
        assert_eq!(parse_connect(b"CONNECT 4294967296"), None);
        assert_eq!(parse_connect(b"CONNECT +5"), None);
        assert_eq!(parse_connect(b"CONNECT "), None);
        assert_eq!(parse_connect(b"connect 5"), None);
        assert_eq!(parse_connect(b"CONNECT 5 6"), None);
        assert_eq!(parse_connect(&[0xff, 0xfe]), None);
    }
}
