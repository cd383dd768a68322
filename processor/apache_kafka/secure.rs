//! A SASL_SSL listener beside the plaintext one: SCRAM-SHA-512 over TLS,
//! with a certificate authority made for the cluster by `openssl`, SCRAM
//! users written at storage format, and Kafka's standard authorizer with
//! no access for anyone without an ACL. The plaintext listener (the tests'
//! and the other brokers' way in) is the super user.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// The files a secured cluster's clients need.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The CA that signed the brokers' certificate: what a client trusts.
    pub ca: PathBuf,
    /// Another CA, which signed nothing the brokers present.
    pub other_ca: PathBuf,
    /// The brokers' key and certificate chain (PEM), for their keystore.
    keystore: PathBuf,
}

impl Tls {
    /// Makes both CAs and the brokers' certificate (for 127.0.0.1 and
    /// localhost) under `dir`.
    pub fn make(dir: &Path) -> anyhow::Result<Tls> {
        std::fs::create_dir_all(dir)?;
        let ca = dir.join("ca.pem");
        let other_ca = dir.join("other-ca.pem");
        let key = dir.join("broker.key");
        let csr = dir.join("broker.csr");
        let cert = dir.join("broker.pem");
        let ext = dir.join("broker.ext");
        for (name, pem) in [("ca", &ca), ("other-ca", &other_ca)] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=vigil-test-{name}"),
                "-keyout",
                &path(&dir.join(format!("{name}.key"))),
                "-out",
                &path(pem),
            ])?;
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &path(&key),
            "-out",
            &path(&csr),
        ])?;
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &path(&csr),
            "-CA",
            &path(&ca),
            "-CAkey",
            &path(&dir.join("ca.key")),
            "-CAcreateserial",
            "-extfile",
            &path(&ext),
            "-out",
            &path(&cert),
        ])?;
        let keystore = dir.join("broker-keystore.pem");
        std::fs::write(&keystore, [std::fs::read(&key)?, std::fs::read(&cert)?].concat())?;
        Ok(Tls { ca, other_ca, keystore })
    }

    /// The broker properties of the SASL_SSL listener and the authorizer.
    pub(super) fn properties(&self) -> String {
        format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={}\n\
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
             super.users=User:ANONYMOUS\n\
             allow.everyone.if.no.acl.found=false\n",
            self.keystore.display()
        )
    }
}

/// `kafka-storage format` arguments adding each SCRAM-SHA-512 user.
pub(super) fn scram_args(users: &[(String, String)]) -> Vec<String> {
    users.iter().flat_map(|(name, password)| ["--add-scram".to_string(), scram_user(name, password)]).collect()
}

fn scram_user(name: &str, password: &str) -> String {
    format!("SCRAM-SHA-512=[name={name},password={password}]")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl").args(args).output().context("running openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
