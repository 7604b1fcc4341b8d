//! Finding a free loopback port.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// It binds port 0, reads the port the OS chose and closes the socket, so another process
/// (or a parallel test) can take the port before the caller binds it. Prefer binding
/// `127.0.0.1:0` yourself and asking the socket for its address; use this only when a port
/// must be known before the thing that listens on it exists (for example a server that is
/// restarted on the same port).
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
