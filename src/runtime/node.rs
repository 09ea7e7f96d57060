//! This process as a node of duehook: its id, which its registration, heartbeat and
//! claims in the store carry (see `crate::store::cluster`).

/// A fresh node id: the configured name (or host name), the pid and a short random tag,
/// so a restarted process is a new node and its predecessor's claims lapse cleanly.
pub fn new_id(name: &str) -> (String, String) {
    let host = if name.is_empty() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".to_string())
    } else {
        name.to_string()
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (format!("{host}-{}-{}", std::process::id(), &tag[..6]), host)
}
