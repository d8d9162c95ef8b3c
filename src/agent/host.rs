//! What the agent tells the manager about the host: its name, the file system of the store,
//! the load, and the address others reach the mirror on.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The host name: `/proc/sys/kernel/hostname`, else the `HOSTNAME` environment variable.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
}

/// Total and free bytes of the file system holding `dir` (free: what an unprivileged writer
/// may still use); zeros when it cannot be read.
pub fn disk(dir: &Path) -> (u64, u64) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => (
            s.f_blocks.saturating_mul(s.f_frsize),
            s.f_bavail.saturating_mul(s.f_frsize),
        ),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot read the store's file system size");
            (0, 0)
        }
    }
}

/// The one-minute load average (`/proc/loadavg`); 0 when unknown.
pub fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The mirror's address as the manager (and so other hosts) can reach it: the bound address,
/// or, when it listens on every interface, the local address this host uses towards the
/// manager, with the mirror's port.
pub async fn advertised(mirror: SocketAddr, manager: &reqwest::Url) -> String {
    if !mirror.ip().is_unspecified() {
        return mirror.to_string();
    }
    let towards = async {
        let host = manager.host_str()?;
        let port = manager.port_or_known_default()?;
        let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
        let bind: SocketAddr = match target {
            SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
            SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
        };
        // A datagram socket "connected" to the manager learns the route's source address
        // without sending anything.
        let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
        socket.connect(target).await.ok()?;
        Some(socket.local_addr().ok()?.ip())
    };
    match towards.await {
        Some(ip) => SocketAddr::new(ip, mirror.port()).to_string(),
        None => mirror.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_host_are_read() {
        let (total, free) = disk(Path::new("."));
        assert!(total > 0 && free <= total, "{total} {free}");
        assert_eq!(disk(Path::new("/no/such/dir")), (0, 0));
        assert!(load() >= 0.0);
        assert!(hostname().is_some());
    }

    #[tokio::test]
    async fn the_advertised_address_is_reachable_from_the_manager() {
        let manager = reqwest::Url::parse("http://127.0.0.1:8080").unwrap();
        let bound: SocketAddr = "127.0.0.1:65001".parse().unwrap();
        assert_eq!(advertised(bound, &manager).await, "127.0.0.1:65001");
        let any: SocketAddr = "0.0.0.0:65001".parse().unwrap();
        assert_eq!(advertised(any, &manager).await, "127.0.0.1:65001");
    }
}
