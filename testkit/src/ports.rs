//! Ports for the servers a test starts itself.

/// A free loopback port for a server the test starts later (a worker's
/// health endpoint, a scratch Redis, Redis Cluster node or broker), which
/// binds it itself.
///
/// Taken from the 10,000 ports below the kernel's ephemeral range
/// (`ip_local_port_range`), checked free by binding it: a port from
/// `bind(0)` is in that range, where the kernel may hand it to any new
/// connection before the server binds it (a cluster node once died of
/// "Address already in use" on its bus port while the other tests ran).
/// Falls back to `bind(0)` when the range starts too low to leave room.
///
/// Binding only shows the port free now: until its server binds it, another
/// `free_port` (this process's next call, another test process) may pick it
/// too, and two nodes of one test cluster once got the same port. So each
/// port is also reserved, by an exclusive lock on
/// `coupon-service-port-PORT.lock` in the temp directory, held until this
/// process exits (also over a kill and restart of the server).
pub fn free_port() -> u16 {
    use rand::Rng;
    static RESERVED: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let reserve = |port: u16| {
        let lock = std::fs::File::create(
            std::env::temp_dir().join(format!("coupon-service-port-{port}.lock")),
        )
        .ok()?;
        // flock: taken already by another process, or by this one for an
        // earlier call (each open file is locked on its own).
        lock.try_lock().ok()?;
        std::net::TcpListener::bind(("127.0.0.1", port)).ok()?;
        RESERVED.lock().unwrap().push(lock);
        Some(port)
    };
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 11_024 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            if let Some(port) = reserve(rng.gen_range(low - 10_000..low)) {
                return port;
            }
        }
    }
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if let Some(port) = reserve(port) {
            return port;
        }
    }
}
