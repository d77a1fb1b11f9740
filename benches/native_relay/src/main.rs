//! A blind byte relay with no Python per event: the floor a relay moved into native code could reach.
//!
//! For each accepted client connection it opens one connection to the upstream and copies bytes both
//! ways, without parsing anything. Two ways of waiting for bytes:
//!
//! * `threads` (default): two threads per pair, each a blocking `read` + `write_all` loop, i.e. what a
//!   native relay handed a pair of sockets by the Python gateway could run.
//! * `epoll`: one thread, level-triggered epoll over every socket, one `read` per readiness event.
//!
//!     native-relay --listen PORT --upstream HOST:PORT [--mode threads|epoll]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::thread;

const BUF: usize = 64 * 1024;

struct Args {
    listen: u16,
    upstream: String,
    epoll: bool,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut upstream, mut epoll) = (None, None, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => listen = Some(value()?.parse::<u16>().map_err(|e| format!("--listen: {e}"))?),
            "--upstream" => upstream = Some(value()?),
            "--mode" => match value()?.as_str() {
                "threads" => epoll = false,
                "epoll" => epoll = true,
                other => return Err(format!("--mode: expected threads or epoll, got {other}")),
            },
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen PORT is required")?,
        upstream: upstream.ok_or("--upstream HOST:PORT is required")?,
        epoll,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("native-relay: {msg}\nusage: native-relay --listen PORT --upstream HOST:PORT [--mode threads|epoll]");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", args.listen)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("native-relay: bind 127.0.0.1:{}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mode = if args.epoll { "epoll" } else { "threads" };
    println!("native relay ({mode}) listening on http://127.0.0.1:{}", args.listen);
    let result = if args.epoll { epoll_relay(listener, &args.upstream) } else { thread_relay(listener, &args.upstream) };
    if let Err(e) = result {
        eprintln!("native-relay: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn connect_pair(client: &TcpStream, upstream: &str) -> io::Result<TcpStream> {
    let up = TcpStream::connect(upstream)?;
    up.set_nodelay(true)?;
    client.set_nodelay(true)?;
    Ok(up)
}

// -- one blocking thread per direction ------------------------------------------------------------

fn thread_relay(listener: TcpListener, upstream: &str) -> io::Result<()> {
    for client in listener.incoming() {
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                eprintln!("native-relay: accept: {e}");
                continue;
            }
        };
        let upstream = upstream.to_owned();
        thread::spawn(move || {
            let up = match connect_pair(&client, &upstream) {
                Ok(up) => up,
                Err(e) => {
                    eprintln!("native-relay: connect {upstream}: {e}");
                    return;
                }
            };
            let (Ok(client2), Ok(up2)) = (client.try_clone(), up.try_clone()) else { return };
            let back = thread::spawn(move || pump(up2, client2));
            pump(client, up);
            let _ = back.join();
        });
    }
    Ok(())
}

/// Copy `from` -> `to` until EOF (then half-close `to`) or an error (then close both).
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// -- one epoll thread ------------------------------------------------------------------------------

const LISTENER: u64 = u64::MAX;

struct Conn {
    stream: TcpStream,
    peer: usize,
    /// Bytes read from the peer that this socket would not take yet (EAGAIN on write).
    pending: Vec<u8>,
}

struct Epoll {
    fd: i32,
}

impl Epoll {
    fn new() -> io::Result<Self> {
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        if unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

const READ: u32 = libc::EPOLLIN as u32;
const WRITE: u32 = libc::EPOLLOUT as u32;

fn epoll_relay(listener: TcpListener, upstream: &str) -> io::Result<()> {
    let ep = Epoll::new()?;
    listener.set_nonblocking(true)?;
    ep.ctl(libc::EPOLL_CTL_ADD, listener.as_raw_fd(), READ, LISTENER)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; BUF];
    loop {
        let n = unsafe { libc::epoll_wait(ep.fd, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events[..n as usize] {
            let (token, flags) = (ev.u64, ev.events);
            if token == LISTENER {
                accept_all(&ep, &listener, upstream, &mut conns, &mut free);
                continue;
            }
            let i = token as usize;
            if conns.get(i).is_none_or(|c| c.is_none()) {
                continue; // closed earlier in this batch
            }
            let ok = on_event(&ep, &mut conns, i, flags, &mut buf);
            if !matches!(ok, Ok(true)) {
                close_pair(&mut conns, &mut free, i);
            }
        }
    }
}

/// Ok(false) or an error: close the pair.
fn on_event(ep: &Epoll, conns: &mut [Option<Conn>], i: usize, flags: u32, buf: &mut [u8]) -> io::Result<bool> {
    if flags & WRITE != 0 && !flush(ep, conns, i)? {
        return Ok(false);
    }
    if flags & (READ | libc::EPOLLHUP as u32 | libc::EPOLLERR as u32) != 0 {
        return forward(ep, conns, i, buf);
    }
    Ok(true)
}

fn accept_all(ep: &Epoll, listener: &TcpListener, upstream: &str, conns: &mut Vec<Option<Conn>>, free: &mut Vec<usize>) {
    loop {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                eprintln!("native-relay: accept: {e}");
                return;
            }
        };
        // A blocking connect: on loopback it completes at once, and pairing is not what we measure.
        let up = match connect_pair(&client, upstream) {
            Ok(up) => up,
            Err(e) => {
                eprintln!("native-relay: connect {upstream}: {e}");
                continue;
            }
        };
        if client.set_nonblocking(true).is_err() || up.set_nonblocking(true).is_err() {
            continue;
        }
        let mut slot = || match free.pop() {
            Some(i) => i,
            None => {
                conns.push(None);
                conns.len() - 1
            }
        };
        let (a, b) = (slot(), slot());
        let registered = ep.ctl(libc::EPOLL_CTL_ADD, client.as_raw_fd(), READ, a as u64).is_ok()
            && ep.ctl(libc::EPOLL_CTL_ADD, up.as_raw_fd(), READ, b as u64).is_ok();
        conns[a] = Some(Conn { stream: client, peer: b, pending: Vec::new() });
        conns[b] = Some(Conn { stream: up, peer: a, pending: Vec::new() });
        if !registered {
            close_pair(conns, free, a);
        }
    }
}

/// One read from `i`, written on to its peer. Ok(false): EOF or the peer is gone, close the pair.
fn forward(ep: &Epoll, conns: &mut [Option<Conn>], i: usize, buf: &mut [u8]) -> io::Result<bool> {
    let p = conns[i].as_ref().expect("live connection").peer;
    if !conns[p].as_ref().is_some_and(|peer| peer.pending.is_empty()) {
        return Ok(conns[p].is_some()); // the peer is still draining what we read last time
    }
    let n = {
        let conn = conns[i].as_mut().expect("live connection");
        match conn.stream.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => return Ok(true),
            Err(e) => return Err(e),
        }
    };
    let peer = conns[p].as_mut().expect("live peer");
    let mut written = 0;
    while written < n {
        match peer.stream.write(&buf[written..n]) {
            Ok(k) => written += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if written < n {
        // Back-pressure: park the rest on the peer, wait for it to drain, stop reading meanwhile.
        peer.pending.extend_from_slice(&buf[written..n]);
        ep.ctl(libc::EPOLL_CTL_MOD, peer.stream.as_raw_fd(), READ | WRITE, p as u64)?;
        let conn = conns[i].as_ref().expect("live connection");
        ep.ctl(libc::EPOLL_CTL_MOD, conn.stream.as_raw_fd(), 0, i as u64)?;
    }
    Ok(true)
}

/// Write what is parked on `i`; once drained, resume reading from its peer.
fn flush(ep: &Epoll, conns: &mut [Option<Conn>], i: usize) -> io::Result<bool> {
    let conn = conns[i].as_mut().expect("live connection");
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(k) => {
                conn.pending.drain(..k);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
    ep.ctl(libc::EPOLL_CTL_MOD, conn.stream.as_raw_fd(), READ, i as u64)?;
    let p = conn.peer;
    let peer = conns[p].as_ref().expect("live peer");
    ep.ctl(libc::EPOLL_CTL_MOD, peer.stream.as_raw_fd(), READ, p as u64)?;
    Ok(true)
}

/// Close both sockets of the pair (dropping a `TcpStream` closes it and removes it from epoll).
fn close_pair(conns: &mut [Option<Conn>], free: &mut Vec<usize>, i: usize) {
    if let Some(conn) = conns[i].take() {
        free.push(i);
        let _ = conn.stream.shutdown(Shutdown::Both);
        if let Some(peer) = conns[conn.peer].take() {
            free.push(conn.peer);
            let _ = peer.stream.shutdown(Shutdown::Both);
        }
    }
}
