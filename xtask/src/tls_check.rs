//! `cargo xtask tls-check`: a TLS session with `redis-cli --tls` (Debian's redis-tools) against
//! the real release server, with certificates made here: the CA, the server's and a client's.
//! The cargo tests cover TLS with the `redis` crate; this proves a stock Redis tool talks to
//! Moon's TLS port too. CI runs it (`.ci/run` installs redis-tools when missing).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::server::{build_release, root, Server};

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.to_string_lossy().into_owned())
}

fn redis_cli(port: u16, tls: &[String], words: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--tls"])
        .args(tls)
        .args(words)
        .output()
        .context("running redis-cli: install Debian's redis-tools (apt-get install redis-tools)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text.trim().to_string()))
}

pub fn run() -> anyhow::Result<bool> {
    let bin = build_release()?;
    let work = root().join("target").join("tls-check");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct subjects: OpenSSL builds chains by name.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Moon tls-check CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params.signed_by(&server_key, &ca, &ca_key)?;
    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(vec!["client".into()])?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, "moon client");
    let client = client_params.signed_by(&client_key, &ca, &ca_key)?;
    let ca_file = write(&work, "ca.pem", &ca.pem())?;
    let cert = write(&work, "server.pem", &server.pem())?;
    let key = write(&work, "server.key", &server_key.serialize_pem())?;
    let client_cert = write(&work, "client.pem", &client.pem())?;
    let client_key_file = write(&work, "client.key", &client_key.serialize_pem())?;

    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let args: Vec<String> = [
        "--port",
        "0",
        "--shards",
        "2",
        "--pin-cpus",
        "no",
        "--appendonly",
        "no",
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_file,
        "--tls-auth-clients",
        "yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = Server::spawn(&bin, &args, &work.join("server.log"))?;
    server.wait_ready(Duration::from_secs(60))?;

    let with_cert = vec![
        "--cacert".to_string(),
        ca_file.clone(),
        "--cert".into(),
        client_cert,
        "--key".into(),
        client_key_file,
    ];
    let mut ok = true;
    let mut check = |what: &str, got: (bool, String), want_ok: bool, want: &str| {
        let pass = got.0 == want_ok && got.1.contains(want);
        println!("{} {what}: {}", if pass { "ok  " } else { "FAIL" }, got.1);
        ok &= pass;
    };
    check(
        "SET over TLS",
        redis_cli(tls_port, &with_cert, &["SET", "tls-check", "moon"])?,
        true,
        "OK",
    );
    check(
        "GET over TLS",
        redis_cli(tls_port, &with_cert, &["GET", "tls-check"])?,
        true,
        "moon",
    );
    // Without a client certificate (tls-auth-clients yes) nothing is served.
    let (served, text) = redis_cli(tls_port, &["--cacert".into(), ca_file], &["PING"])?;
    check(
        "no client certificate is refused",
        (served && text == "PONG", text),
        false,
        "",
    );
    server.terminate()?;
    if !ok {
        bail!(
            "redis-cli --tls did not work against Moon (log: {})",
            work.join("server.log").display()
        );
    }
    Ok(true)
}
