//! TLS against the real binary: certificates generated here (rcgen), a TLS session with the
//! `redis` crate (rustls) beside the plain port, client certificates required / optional,
//! and certificates reloaded by CONFIG SET. (`cargo xtask tls-check` does the same with
//! redis-cli --tls.)

mod common;

use std::path::{Path, PathBuf};

use common::{expect_err, MoonServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use redis::{ClientTlsConfig, TlsCertificates};

fn cmd<T: redis::FromRedisValue>(con: &mut redis::Connection, words: &[&str]) -> T {
    redis::cmd(words[0])
        .arg(&words[1..])
        .query(con)
        .unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn pki(dir: &Path, ca_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let server = server.signed_by(&server_key, &ca, &ca_key).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(vec!["client".into()]).unwrap();
    client
        .distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();
    write(dir, &format!("{ca_name}-ca.pem"), &ca.pem());
    write(dir, &format!("{ca_name}-server.pem"), &server.pem());
    write(
        dir,
        &format!("{ca_name}-server.key"),
        &server_key.serialize_pem(),
    );
    Pki {
        dir: dir.to_path_buf(),
        ca_pem: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

impl Pki {
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tls_client(port: u16, pki: &Pki, with_cert: bool) -> redis::Client {
    redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        TlsCertificates {
            client_tls: with_cert.then(|| ClientTlsConfig {
                client_cert: pki.client_cert.clone().into_bytes(),
                client_key: pki.client_key.clone().into_bytes(),
            }),
            root_cert: Some(pki.ca_pem.clone().into_bytes()),
        },
    )
    .unwrap()
}

fn tls_args(pki: &Pki, port: u16, name: &str, auth: &str) -> Vec<String> {
    vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        pki.file(&format!("{name}-server.pem")),
        "--tls-key-file".into(),
        pki.file(&format!("{name}-server.key")),
        "--tls-ca-cert-file".into(),
        pki.file(&format!("{name}-ca.pem")),
        "--tls-auth-clients".into(),
        auth.into(),
    ]
}

#[test]
fn tls_and_plain_ports_serve_side_by_side_with_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path(), "one");
    let port = free_port();
    let args = tls_args(&pki, port, "one", "yes");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = MoonServer::start(2, &args);
    let mut t = tls_client(port, &pki, true).get_connection().unwrap();
    assert_eq!(cmd::<String>(&mut t, &["SET", "k", "over tls"]), "OK");
    let mut plain = s.client();
    assert_eq!(cmd::<String>(&mut plain, &["GET", "k"]), "over tls");
    // Big values and pipelines go through the TLS stream intact.
    let big = "x".repeat(1 << 20);
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("b{i}")).arg(&big).ignore();
    }
    pipe.cmd("GET").arg("b99");
    let (back,): (String,) = pipe.query(&mut t).unwrap();
    assert_eq!(back.len(), big.len());
    // tls-auth-clients yes: no client certificate, no session.
    let no_cert = tls_client(port, &pki, false).get_connection();
    let refused = match no_cert {
        Err(_) => true,
        Ok(mut c) => redis::cmd("PING").query::<String>(&mut c).is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    // optional: both are served.
    let _: String = cmd(
        &mut plain,
        &["CONFIG", "SET", "tls-auth-clients", "optional"],
    );
    let mut anon = tls_client(port, &pki, false).get_connection().unwrap();
    assert_eq!(cmd::<String>(&mut anon, &["PING"]), "PONG");
    let info: Vec<String> = cmd(&mut plain, &["CONFIG", "GET", "tls-port"]);
    assert_eq!(info[1], port.to_string());
}

#[test]
fn certificates_are_reloaded_by_config_set_and_bad_ones_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = pki(tmp.path(), "first");
    let second = pki(tmp.path(), "second");
    let port = free_port();
    let args = tls_args(&first, port, "first", "no");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = MoonServer::start(1, &args);
    let mut plain = s.client();
    assert_eq!(
        cmd::<String>(
            &mut tls_client(port, &first, false).get_connection().unwrap(),
            &["PING"]
        ),
        "PONG"
    );
    // A certificate from another CA: clients trusting only the second CA fail until reload.
    assert!(tls_client(port, &second, false)
        .get_connection()
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_err());
    let _: String = cmd(
        &mut plain,
        &[
            "CONFIG",
            "SET",
            "tls-cert-file",
            &second.file("second-server.pem"),
            "tls-key-file",
            &second.file("second-server.key"),
        ],
    );
    let mut c = tls_client(port, &second, false).get_connection().unwrap();
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
    // A file that is not a certificate is refused; the old configuration stays.
    let junk = write(tmp.path(), "junk.pem", "not a certificate\n");
    let e = expect_err(&mut plain, &["CONFIG", "SET", "tls-cert-file", &junk]);
    assert!(
        e.starts_with("ERR CONFIG SET failed") && e.contains("junk.pem"),
        "{e}"
    );
    let mut c = tls_client(port, &second, false).get_connection().unwrap();
    assert_eq!(cmd::<String>(&mut c, &["PING"]), "PONG");
}

#[test]
fn a_bad_tls_setup_refuses_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = common::run_expecting_exit(
        &tmp.path().join("data"),
        1,
        &[
            "--tls-port",
            &free_port().to_string(),
            "--tls-cert-file",
            "/nonexistent.pem",
            "--tls-key-file",
            "/nonexistent.key",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        out.contains("cannot set up TLS") && out.contains("/nonexistent.pem"),
        "{out}"
    );
}

/// Findings of the TLS review: a reply larger than the socket's buffers must arrive whole (a
/// TLS layer keeps records buffered until flushed), and a TLS subscriber that never reads is
/// cut off and forgotten (its close must not wait for it to read).
#[test]
fn big_replies_arrive_and_a_tls_reader_that_never_reads_is_forgotten() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path(), "big");
    let port = free_port();
    let mut args = tls_args(&pki, port, "big", "no");
    args.extend([
        "--client-output-buffer-limit".into(),
        "pubsub 1mb 256kb 60".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = MoonServer::start(2, &args);
    let mut t = tls_client(port, &pki, false).get_connection().unwrap();
    t.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let big = "v".repeat(32 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut t)
        .unwrap();
    let back: String = cmd(&mut t, &["GET", "big"]);
    assert_eq!(back.len(), big.len());
    // A subscriber over TLS that never reads again.
    let mut sub = tls_client(port, &pki, false).get_connection().unwrap();
    let mut p = sub.as_pubsub();
    p.subscribe("feed").unwrap();
    let mut publisher = s.client();
    let payload = "x".repeat(64 * 1024);
    let mut sent = 0;
    while cmd::<i64>(&mut publisher, &["PUBLISH", "feed", &payload]) == 1 {
        sent += 1;
        assert!(
            sent < 10_000,
            "the slow TLS subscriber was never disconnected"
        );
    }
    assert!(common::eventually(
        std::time::Duration::from_secs(10),
        || {
            let n: Vec<redis::Value> = cmd(&mut publisher, &["PUBSUB", "NUMSUB", "feed"]);
            n.get(1) == Some(&redis::Value::Int(0))
        }
    ));
    drop(p);
}
