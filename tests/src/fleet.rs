//! Export files for tests, written atomically (write, then rename) so a
//! syncer never reads half a file unless a test wants it to.

use std::path::{Path, PathBuf};

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshdns-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A registry state file's path in this directory, and the
    /// `--state-file` value naming it.
    pub fn state_file(&self) -> (PathBuf, String) {
        let path = self.0.join("registry.state");
        let flag = path.display().to_string();
        (path, flag)
    }

    /// Writes `name` with `text` by rename, returning its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Cluster east-1 of the standard test fleet.
pub const EAST_1: &str = r#"
cluster: east-1
region: us-east
zone: us-east-1a
clientCIDRs: [127.0.0.2/32]
services:
  - name: web
    namespace: shop
    ports: [{name: http, protocol: TCP, port: 8080}]
    endpoints:
      - {ip: 10.1.0.11}
      - {ip: 10.1.0.12}
      - {ip: 10.1.0.13, ready: false}
  - name: db
    namespace: data
    ports: [{name: postgres, protocol: TCP, port: 5432}]
    endpoints:
      - {ip: 10.1.2.10, hostname: db-0}
      - {ip: 10.1.2.11, hostname: db-1, ready: false}
"#;

/// Cluster east-2 of the standard test fleet.
pub const EAST_2: &str = r#"
cluster: east-2
region: us-east
zone: us-east-1b
clientCIDRs: [127.0.0.3/32]
services:
  - name: web
    namespace: shop
    ports: [{name: http, protocol: TCP, port: 8080}]
    endpoints:
      - {ip: 10.2.0.11}
  - name: api
    namespace: shop
    mode: clusterip
    clusterIPs: [10.96.2.10]
    ports: [{name: grpc, protocol: TCP, port: 9090}]
    endpoints:
      - {ip: 10.2.3.31}
"#;

/// Cluster west-1 of the standard test fleet, with a 150-endpoint service
/// (`big.shop`) for truncation, a draining one and a dark one.
pub fn west_1() -> String {
    let mut text = String::from(
        r#"
cluster: west-1
region: us-west
zone: us-west-1a
clientCIDRs: [127.0.0.4/32]
services:
  - name: web
    namespace: shop
    ttl: 30
    ports: [{name: http, protocol: TCP, port: 8080}]
    endpoints:
      - {ips: [10.3.0.11, "fd00:3::11"]}
  - name: api
    namespace: shop
    mode: clusterip
    clusterIPs: [10.96.3.10]
    ports: [{name: grpc, protocol: TCP, port: 9090}]
    endpoints:
      - {ip: 10.3.3.31, ready: false}
  - name: drain
    namespace: shop
    ports: [{name: http, protocol: TCP, port: 80}]
    endpoints:
      - {ip: 10.3.5.1, ready: false, serving: true, terminating: true}
      - {ip: 10.3.5.2, ready: false, serving: false, terminating: true}
  - name: dark
    namespace: shop
    ports: [{name: http, protocol: UDP, port: 53}]
    endpoints:
      - {ip: 10.3.6.1, ready: false}
  - name: big
    namespace: shop
    ports: [{name: http, protocol: TCP, port: 80}]
    endpoints:
"#,
    );
    for i in 1..=150 {
        text.push_str(&format!(
            "      - {{ip: 10.9.{}.{}}}\n",
            i / 100,
            i % 100 + 1
        ));
    }
    text
}

/// Every ready address of `big.shop` in [`west_1`].
pub fn big_addresses() -> Vec<String> {
    let mut v: Vec<String> = (1..=150)
        .map(|i| format!("10.9.{}.{}", i / 100, i % 100 + 1))
        .collect();
    v.sort();
    v
}
