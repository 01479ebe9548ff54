//! Ports for the servers a test starts (a child binary's telemetry server, say).

/// A free TCP port on 127.0.0.1: bound, read and released. Another process may take it before
/// the test's child binds it; on one machine running its own tests that does not happen in
/// practice, and a server a test starts in-process should bind `127.0.0.1:0` instead.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_port_can_be_bound_again() {
        let port = super::free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
