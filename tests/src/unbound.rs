//! unbound, the recursive resolver, as a process in front of a meshdns
//! server: the configuration the resolver tests, the edge tests and
//! `meshdns check --via` share.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::Proc;

/// Debian installs daemons such as unbound and dnsmasq in /usr/sbin,
/// which a CI PATH may lack: the path to run `name` by.
pub fn program(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

/// How to run one unbound.
#[derive(Debug, Clone, Copy)]
pub struct Unbound<'a> {
    /// The address it listens on.
    pub listen: &'a str,
    /// The address it sends from, if not its default.
    pub outgoing: Option<&'a str>,
    /// The meshdns server it stubs `global` to; without one, unbound
    /// knows nothing of the zone.
    pub stub: Option<SocketAddr>,
    /// Caching off: every answer comes from upstream now.
    pub no_cache: bool,
}

impl Unbound<'_> {
    /// Its configuration, listening on `port`, its files in `dir`.
    pub fn conf(&self, dir: &Path, port: u16) -> String {
        let listen = self.listen;
        let dir = dir.display();
        let mut conf = format!(
            r#"server:
    interface: {listen}
    port: {port}
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound-{listen}-{port}.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    do-ip6: no
"#
        );
        if let Some(outgoing) = self.outgoing {
            conf.push_str(&format!("    outgoing-interface: {outgoing}\n"));
        }
        if self.no_cache {
            conf.push_str("    cache-max-ttl: 0\n    cache-max-negative-ttl: 0\n");
        }
        if let Some(stub) = self.stub {
            conf.push_str(&format!(
                r#"    domain-insecure: "global"
    local-zone: "global." nodefault
stub-zone:
    name: "global"
    stub-addr: {ip}@{port}
"#,
                ip = stub.ip(),
                port = stub.port(),
            ));
        }
        conf
    }

    /// Its configuration with EDNS Client Subnet on (the subnetcache
    /// module): each client's whole address (/32, /128) goes to the stub
    /// server, whose answers are cached by the scope they come back with
    /// (scope 0: for every client). QNAME minimisation and
    /// harden-below-nxdomain off, so each name is asked as it is.
    pub fn ecs_conf(&self, dir: &Path, port: u16) -> String {
        let stub = self.stub.map(|s| s.ip().to_string()).unwrap_or_default();
        self.conf(dir, port)
            .replace(
                "module-config: \"iterator\"",
                "module-config: \"subnetcache iterator\"",
            )
            .replacen(
                "    do-ip6: no\n",
                &format!(
                    "    do-ip6: no\n    qname-minimisation: no\n    harden-below-nxdomain: no\n    send-client-subnet: {stub}\n    client-subnet-always-forward: yes\n    max-client-subnet-ipv4: 32\n    max-client-subnet-ipv6: 128\n"
                ),
                1,
            )
    }

    /// Starts it on a free port (unbound cannot bind port 0 and say which
    /// it got; another port if a parallel test takes the first), its
    /// configuration and files in `dir`. Returns the process and the
    /// address it answers on.
    pub fn start(&self, dir: &Path) -> (Proc, SocketAddr) {
        self.start_with(dir, Self::conf)
    }

    /// [`start`](Self::start) with EDNS Client Subnet on ([`Self::ecs_conf`]).
    pub fn start_ecs(&self, dir: &Path) -> (Proc, SocketAddr) {
        self.start_with(dir, Self::ecs_conf)
    }

    fn start_with(&self, dir: &Path, conf: fn(&Self, &Path, u16) -> String) -> (Proc, SocketAddr) {
        let (proc, port) = Proc::start_on_free_port(
            &program("unbound"),
            |port| {
                let path = dir.join(format!("unbound-{}-{port}.conf", self.listen));
                std::fs::write(&path, conf(self, dir, port)).expect("write unbound.conf");
                vec!["-d".into(), "-c".into(), path.display().to_string()]
            },
            Duration::from_millis(300),
        );
        let addr = format!("{}:{port}", self.listen)
            .parse()
            .expect("listen is an IP address");
        (proc, addr)
    }
}
