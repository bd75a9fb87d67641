//! A hostile registry: manifests past the 4 MiB cap, with a declared length, and without
//! one, endless. The pull must fail with a clear error as soon as the cap is passed,
//! holding no more than the cap, and store nothing.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use berth_image::{Client, ClientOptions, Error, Reference, Store};
use common::read_request;

/// How the manifest is served.
#[derive(Clone, Copy)]
enum Manifest {
    /// 5 MiB, with a Content-Length saying so.
    Declared,
    /// No Content-Length: bytes until the client hangs up.
    Endless,
}

/// Serves `/v2/` without authentication and `kind` for every manifest request.
fn serve(kind: Manifest) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let Some((path, _)) = read_request(&mut reader) else {
                    return;
                };
                if !path.contains("/manifests/") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                    return;
                }
                let ct = "Content-Type: application/vnd.oci.image.manifest.v1+json";
                let block = vec![b' '; 64 * 1024];
                match kind {
                    Manifest::Declared => {
                        let n = 5 * 1024 * 1024;
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\n{ct}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                        );
                        for _ in 0..n / block.len() {
                            if conn.write_all(&block).is_err() {
                                return;
                            }
                        }
                    }
                    Manifest::Endless => {
                        let _ =
                            write!(conn, "HTTP/1.1 200 OK\r\n{ct}\r\nConnection: close\r\n\r\n");
                        // Bounded only so that a broken client cannot keep the test alive.
                        for _ in 0..(1 << 14) {
                            if conn.write_all(&block).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

async fn pull_fails(kind: Manifest) {
    let port = serve(kind);
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let client = Client::new(ClientOptions {
        progress: false,
        prepare_layers: false,
        ..ClientOptions::default()
    })
    .unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/hostile/app:v1")).unwrap();
    let started = Instant::now();
    let err = client.pull(&store, &r).await.unwrap_err();
    assert!(
        matches!(&err, Error::Malformed { reason, .. } if reason.contains("larger than 4 MiB")),
        "{err}"
    );
    assert!(
        err.to_string().contains("hostile/app"),
        "names the image: {err}"
    );
    // The endless one is given up on at the cap, not read to its end (1 GiB away).
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(store.list().unwrap().is_empty(), "nothing is stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_declared_larger_than_the_cap_is_refused() {
    pull_fails(Manifest::Declared).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endless_manifest_is_cut_off_at_the_cap() {
    pull_fails(Manifest::Endless).await;
}
