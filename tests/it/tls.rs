//! `mqtts://` with a private CA (`MQTT_CA_FILE`), as a fog data center's broker has.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::BrokerOptions;
use crate::scenario::{Scenario, publish_readings};

/// Writes a CA and a server certificate for localhost/127.0.0.1 into `dir`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=fog test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn readings_arrive_over_mqtts_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let tls_port = free_port();
    let path = |name: &str| certs.path().join(name).display().to_string();
    let mut scenario = Scenario::with_broker(BrokerOptions {
        max_queued_messages: Some(0),
        // A second listener with TLS; the harness's plain one stays for the publisher.
        extra_config: format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            path("ca.pem"),
            path("server.pem"),
            path("server.key")
        ),
        ..BrokerOptions::default()
    })
    .await;
    scenario.extra_env.extend([
        ("MQTT_URL", format!("mqtts://localhost:{tls_port}")),
        ("MQTT_CA_FILE", path("ca.pem")),
    ]);
    let _provider = scenario.spawn_provider().await;
    let publisher = scenario.publisher().await;
    publish_readings(&publisher, 0..50).await;
    scenario.wait_delivered(50, Duration::from_secs(60)).await;
}
