//! Client credential flags: TLS CA, client certificate and key, a bearer
//! token file. Declared once (by [`credential_flags!`]) and instantiated
//! twice: plain (`--tls-ca`, ... for syncers, `status`, `check`) and with
//! a `--follow-` prefix (a follower, whose server has its own `--tls-cert`).

use std::path::PathBuf;

use meshdns_proto::client::ClientAuth;

/// Declares a credential flag group whose flags are `--{prefix}tls-ca`,
/// `--{prefix}tls-cert`, `--{prefix}tls-key`, `--{prefix}token-file`, read
/// from `MESHDNS_{ENV}TLS_CA`, ... when not given. Clap ids get the prefix
/// too (`follow_tls_cert`), since a server's own `tls_cert` sits beside a
/// follower's.
macro_rules! credential_flags {
    ($(#[$meta:meta])* $name:ident, $long:literal, $id:literal, $env:literal, $help:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $name {
            #[doc = concat!($help, "CA (PEM) that signed the registry's certificate (https:// registries).")]
            #[arg(id = concat!($id, "tls_ca"), long = concat!($long, "tls-ca"), env = concat!("MESHDNS_", $env, "TLS_CA"))]
            pub tls_ca: Option<PathBuf>,
            #[doc = concat!($help, "this client's certificate (PEM) for mTLS; its URI SAN is spiffe://<trust-domain>/cluster/<name> for a syncer, spiffe://<trust-domain>/reader/<name> for a reader.")]
            #[arg(id = concat!($id, "tls_cert"), long = concat!($long, "tls-cert"), env = concat!("MESHDNS_", $env, "TLS_CERT"))]
            pub tls_cert: Option<PathBuf>,
            #[doc = concat!($help, "the key (PEM) of --", $long, "tls-cert.")]
            #[arg(id = concat!($id, "tls_key"), long = concat!($long, "tls-key"), env = concat!("MESHDNS_", $env, "TLS_KEY"))]
            pub tls_key: Option<PathBuf>,
            #[doc = concat!($help, "a file holding this client's bearer token.")]
            #[arg(id = concat!($id, "token_file"), long = concat!($long, "token-file"), env = concat!("MESHDNS_", $env, "TOKEN_FILE"))]
            pub token_file: Option<PathBuf>,
        }

        impl $name {
            /// The credentials, TLS or (with `insecure`) plaintext.
            pub fn auth(&self, insecure: bool) -> ClientAuth {
                ClientAuth {
                    ca: self.tls_ca.clone(),
                    cert: self.tls_cert.clone(),
                    key: self.tls_key.clone(),
                    token_file: self.token_file.clone(),
                    insecure,
                }
            }
        }
    };
}

credential_flags!(
    /// How a syncer, `meshdns status` or `meshdns check` authenticates to a
    /// registry (`--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`).
    Credentials,
    "",
    "",
    "",
    ""
);

credential_flags!(
    /// How a follower authenticates to its upstream registry
    /// (`--follow-tls-ca`, ...): its server's own `--tls-cert` is a
    /// different certificate.
    FollowFlags,
    "follow-",
    "follow_",
    "FOLLOW_",
    "With --follow: "
);

/// A client's credentials and `--insecure`: the group `status`, `check`
/// and the syncer flatten.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientFlags {
    #[command(flatten)]
    pub credentials: Credentials,
    /// Talk to registries without TLS. Only for loopback or a network you trust.
    #[arg(long, env = "MESHDNS_INSECURE")]
    pub insecure: bool,
}

impl ClientFlags {
    /// The credentials these flags give.
    pub fn auth(&self) -> ClientAuth {
        self.credentials.auth(self.insecure)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Both {
        #[command(flatten)]
        client: ClientFlags,
        #[command(flatten)]
        follow: FollowFlags,
    }

    #[test]
    fn flag_names_and_prefix() {
        let both = Both::try_parse_from([
            "x",
            "--tls-ca",
            "a",
            "--tls-cert",
            "b",
            "--tls-key",
            "c",
            "--token-file",
            "d",
            "--insecure",
            "--follow-tls-ca",
            "e",
            "--follow-tls-cert",
            "f",
            "--follow-tls-key",
            "g",
            "--follow-token-file",
            "h",
        ])
        .expect("flags parse");
        let client = both.client.auth();
        assert_eq!(client.ca, Some("a".into()));
        assert_eq!(client.cert, Some("b".into()));
        assert_eq!(client.key, Some("c".into()));
        assert_eq!(client.token_file, Some("d".into()));
        assert!(client.insecure);
        let follow = both.follow.auth(false);
        assert_eq!(follow.ca, Some("e".into()));
        assert_eq!(follow.cert, Some("f".into()));
        assert_eq!(follow.key, Some("g".into()));
        assert_eq!(follow.token_file, Some("h".into()));
        assert!(!follow.insecure);
    }

    #[test]
    fn env_names() {
        use clap::CommandFactory;
        let command = Both::command();
        let envs: Vec<String> = command
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "MESHDNS_TLS_CA",
            "MESHDNS_TLS_CERT",
            "MESHDNS_TLS_KEY",
            "MESHDNS_TOKEN_FILE",
            "MESHDNS_INSECURE",
            "MESHDNS_FOLLOW_TLS_CA",
            "MESHDNS_FOLLOW_TLS_CERT",
            "MESHDNS_FOLLOW_TLS_KEY",
            "MESHDNS_FOLLOW_TOKEN_FILE",
        ] {
            assert!(envs.iter().any(|e| e == want), "{want} missing: {envs:?}");
        }
    }
}
