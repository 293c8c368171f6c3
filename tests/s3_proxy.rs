//! A loopback TCP proxy in front of the Garage cluster that cuts some connections after a
//! number of answer bytes: what a reset or a load balancer dropping a connection does to a
//! ranged GET in the middle of its body. Bytes pass unchanged (requests keep the proxy's Host,
//! which is what the client signed).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The proxy; it stops accepting when dropped (its thread ends with the test process).
pub struct CuttingProxy {
    addr: SocketAddr,
    cuts: Arc<AtomicU64>,
}

impl CuttingProxy {
    /// Forwards to `upstream`; every `every`-th connection (1: all) is closed after `limit`
    /// bytes of answer.
    pub fn start(upstream: SocketAddr, limit: u64, every: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicU64::new(0));
        let counted = cuts.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let cut = n as u64 % every == 0;
                let counted = counted.clone();
                std::thread::spawn(move || relay(client, server, cut.then_some(limit), &counted));
            }
        });
        CuttingProxy { addr, cuts }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

fn relay(client: TcpStream, server: TcpStream, limit: Option<u64>, cuts: &AtomicU64) {
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_in, &mut s_out);
        let _ = s_out.shutdown(Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match s_in.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let keep = (l - sent) as usize;
                let _ = c_out.write_all(&buf[..keep]);
                cuts.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ => n,
        };
        if c_out.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = c_out.shutdown(Shutdown::Both);
    let _ = s_in.shutdown(Shutdown::Both);
}
