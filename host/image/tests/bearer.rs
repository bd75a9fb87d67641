//! The Bearer token flow against a small in-process registry with a token server (Debian's
//! docker-registry has no token server): anonymous pull tokens, credentials sent to the
//! token realm, scopes, and refusals.

mod common;

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use berth_image::auth::Credentials;
use berth_image::{Client, ClientOptions, Error, Reference, Store};
use common::*;

#[derive(Default)]
struct Seen {
    token_requests: Vec<(String, Option<String>)>,
}

/// Serves `blobs` (digest -> bytes) and one manifest under repository `repo`, tag `v1`,
/// only to `Bearer pull-token`; the token endpoint hands `pull-token` to anyone asking for
/// `repository:<repo>:pull` and `login-token` to `user:pw`.
fn serve(
    repo: &'static str,
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
) -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let Some((path, headers)) = read_request(&mut reader) else {
                continue;
            };
            let auth = headers.get("authorization").cloned();
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\",scope=\"repository:{repo}:pull\""
            );
            let (status, extra, body): (&str, String, Vec<u8>) = if path.starts_with("/token") {
                s.lock()
                    .unwrap()
                    .token_requests
                    .push((path.clone(), auth.clone()));
                let basic_ok = auth.as_deref()
                    == Some(
                        &Credentials {
                            username: "user".into(),
                            password: "pw".into(),
                        }
                        .basic_header()[..],
                    );
                if auth.is_some() && !basic_ok {
                    (
                        "401 Unauthorized",
                        String::new(),
                        b"{\"details\":\"bad credentials\"}".to_vec(),
                    )
                } else if path.contains(&format!(
                    "scope=repository%3A{}%3Apull",
                    repo.replace('/', "%2F")
                )) {
                    (
                        "200 OK",
                        String::new(),
                        b"{\"token\":\"pull-token\"}".to_vec(),
                    )
                } else if basic_ok {
                    (
                        "200 OK",
                        String::new(),
                        b"{\"access_token\":\"login-token\"}".to_vec(),
                    )
                } else {
                    ("401 Unauthorized", String::new(), b"{}".to_vec())
                }
            } else if path == "/v2/" {
                if auth.as_deref() == Some("Bearer login-token") {
                    ("200 OK", String::new(), b"{}".to_vec())
                } else {
                    // Like Docker Hub: the /v2/ challenge names no scope.
                    let plain = format!(
                        "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\""
                    );
                    (
                        "401 Unauthorized",
                        format!("WWW-Authenticate: {plain}\r\n"),
                        b"{}".to_vec(),
                    )
                }
            } else if auth.as_deref() != Some("Bearer pull-token") {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: {challenge}\r\n"),
                    b"{}".to_vec(),
                )
            } else if path == format!("/v2/{repo}/manifests/v1") {
                (
                    "200 OK",
                    "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n".into(),
                    manifest.clone(),
                )
            } else if let Some(d) = path.strip_prefix(&format!("/v2/{repo}/blobs/")) {
                match blobs.get(d) {
                    Some(b) => ("200 OK", String::new(), b.clone()),
                    None => ("404 Not Found", String::new(), b"{}".to_vec()),
                }
            } else {
                ("404 Not Found", String::new(), b"{}".to_vec())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
    });
    (port, seen)
}

fn client() -> Client {
    Client::new(ClientOptions {
        progress: false,
        prepare_layers: false,
        ..ClientOptions::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_bearer_tokens_pull_an_image() {
    let img = image_with_layer(Tar::new().file("hello", 0o644, b"hi\n"), "ADD hello");
    let mut blobs = HashMap::new();
    blobs.insert(img.config_digest(), img.config.clone());
    blobs.insert(sha(&img.layers[0].blob), img.layers[0].blob.clone());
    let (port, seen) = serve("team/app", img.manifest.clone(), blobs);
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let r = Reference::parse(&format!("127.0.0.1:{port}/team/app:v1")).unwrap();
    let pulled = client().pull(&store, &r).await.unwrap();
    assert_eq!(pulled.image.manifest_digest.as_str(), img.manifest_digest());
    let seen = seen.lock().unwrap();
    // One token for the whole pull, asked anonymously, for the pull scope, with the service.
    assert_eq!(seen.token_requests.len(), 1, "{:?}", seen.token_requests);
    let (path, auth) = &seen.token_requests[0];
    assert!(path.contains("service=fake-registry"), "{path}");
    assert!(
        path.contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{path}"
    );
    assert!(auth.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_sends_credentials_to_the_token_realm() {
    let (port, seen) = serve("x/y", Vec::new(), HashMap::new());
    let registry = format!("127.0.0.1:{port}");
    let good = Credentials {
        username: "user".into(),
        password: "pw".into(),
    };
    client().check_login(&registry, &good).await.unwrap();
    assert_eq!(
        seen.lock()
            .unwrap()
            .token_requests
            .last()
            .unwrap()
            .1
            .as_deref(),
        Some(&good.basic_header()[..])
    );
    let bad = Credentials {
        username: "user".into(),
        password: "nope".into(),
    };
    let err = client().check_login(&registry, &bad).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("refused the stored credentials"),
        "{err}"
    );
}
