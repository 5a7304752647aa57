//! The Redis source over TLS (`rediss://`) against a private
//! `redis-server` with a TLS port and a certificate from a CA made for the
//! test (openssl): with `tls_ca_file` naming that CA, jobs are popped and
//! deleted as over plain TCP; without it (the system's roots, which do not
//! know the CA) the source refuses to open, saying why.

#![cfg(feature = "redis")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::SourceContext;
use sluice::sources::redis::RedisSourceConfig;
use sluice::sources::{Received, SourceConfig};

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .expect("run openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signed for 127.0.0.1, in `dir`.
fn certificates(dir: &Path) {
    let p = |name: &str| dir.join(name).display().to_string();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=sluice test CA",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
    ]));
    run(Command::new("openssl").args([
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p("server.key"),
        "-out",
        &p("server.csr"),
    ]));
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &p("server.csr"),
        "-CA",
        &p("ca.crt"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p("san.ext"),
        "-out",
        &p("server.crt"),
    ]));
}

/// `redis-server` with only a TLS port, killed when dropped.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    fn start(dir: &Path) -> TlsRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let p = |name: &str| dir.join(name).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &p("server.crt"),
                "--tls-key-file",
                &p("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &p("ca.crt"),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no", "--dir", &p("")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/services)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server's TLS port {port} did not open"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        TlsRedis { child, port }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const JOB: &str = r#"{"uuid":"tls-1","displayName":"App\\Jobs\\ProcessReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"data":{"commandName":"App\\Jobs\\ProcessReport","command":"O:22:\"App\\Jobs\\ProcessReport\":1:{s:8:\"reportId\";i:7;}"},"id":"tls-1","attempts":0}"#;

#[tokio::test]
async fn rediss_with_the_servers_ca_pops_and_deletes_and_without_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let server = TlsRedis::start(dir.path());
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    let ca = dir.path().join("ca.crt");

    // Push through a TLS client of the test's own.
    let push = sluice::sources::redis::client(&url, Some(&ca)).unwrap();
    let mut conn = push.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .rpush("queues:tls", JOB)
        .rpush("queues:tls:notify", 1)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut cfg = RedisSourceConfig::new(url.clone(), "tls");
    cfg.block_for_secs = 1;
    cfg.tls_ca_file = Some(ca);
    cfg.check().unwrap();
    let mut source = cfg
        .build(&SourceContext::new("tls", 4))
        .await
        .expect("the source opens over TLS with the CA");
    let Received::Deliveries(mut got) = source.receive(1).await.unwrap() else {
        panic!("a queue does not end");
    };
    let d = got.pop().expect("the job");
    assert_eq!((d.message.id.as_str(), d.message.attempt), ("tls-1", 1));
    d.acker.ack().await.unwrap();
    let left: (u64, u64) = redis::pipe()
        .llen("queues:tls")
        .zcard("queues:tls:reserved")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, (0, 0));
    source.close().await.unwrap();

    // The system's roots do not know the test's CA: refused, saying so.
    let cfg = RedisSourceConfig::new(url, "tls");
    let Err(e) = cfg.build(&SourceContext::new("tls", 4)).await else {
        panic!("an unknown CA is refused");
    };
    let e = e.to_string();
    assert!(e.contains("cannot connect to Redis"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "{e}");
}

#[test]
fn tls_ca_file_needs_rediss_and_a_readable_file() {
    let mut cfg = RedisSourceConfig::new("redis://127.0.0.1:6379/0", "q");
    cfg.tls_ca_file = Some("/nonexistent/ca.crt".into());
    assert_eq!(cfg.check().unwrap_err().field, "tls_ca_file");
    cfg.url = "rediss://127.0.0.1:6380/0".into();
    let e = cfg.check().unwrap_err();
    assert!(e.message.contains("cannot read"), "{}", e.message);
}
