//! Loopback ports for the brokers a test or the benchmark starts.

/// A port that was free a moment ago (bind `127.0.0.1:0`, read it, release it).
///
/// Another process may take it before the caller binds it: callers retry on
/// "address already in use".
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Whether `127.0.0.1:<port>` can be bound right now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}
