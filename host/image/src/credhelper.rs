//! Docker credential helpers: `docker-credential-NAME get`, as named by `credsStore` and
//! `credHelpers` in docker's `config.json` (Docker Desktop keeps logins in the macOS
//! keychain or the Windows credential manager this way).
//!
//! The protocol is docker's: the server URL on the helper's stdin, a JSON object with
//! `Username` and `Secret` on its stdout, and "credentials not found" (exit status 1)
//! when it has none. A helper is a program berth runs, so its answer is bounded in size
//! and in time, and a missing or failing one is an error that names it.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::auth::Credentials;
use crate::error::{Error, Result};

/// Longest a helper may take: long enough for a keychain prompt, short of hanging a pull.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes read from a helper's stdout or stderr.
const MAX_OUTPUT: u64 = 64 * 1024;

/// The program of helper `name`, looked up on `PATH` as docker does.
pub fn program(name: &str) -> Result<String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(Error::CredentialHelper {
            helper: name.to_string(),
            reason: "the name must be letters, digits, '-', '_' or '.'".into(),
        });
    }
    Ok(format!("docker-credential-{name}"))
}

/// Asks helper `name` for the credentials of `server` (a key of docker's config, such as
/// `https://index.docker.io/v1/` or `localhost:5000`). `None` when it has none.
pub fn get(name: &str, server: &str) -> Result<Option<Credentials>> {
    let program = program(name)?;
    let fail = |reason: String| Error::CredentialHelper {
        helper: program.clone(),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "not found on PATH ({e}): install it, or remove \"{name}\" from \
                     credsStore/credHelpers in docker's config.json"
                ),
                _ => format!("cannot start: {e}"),
            })
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading is seen through its status below.
        let _ = stdin.write_all(server.as_bytes());
    }
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "gave no answer within {}s",
                    TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(fail(format!("cannot wait for it: {e}"))),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if !status.success() {
        let message = format!("{} {}", said(&out), said(&err));
        if message
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        return Err(fail(format!(
            "failed ({status}) for {server}: {}",
            message.trim()
        )));
    }
    parse(&out).map_err(|reason| fail(format!("answered for {server}: {reason}")))
}

/// Reads a helper's answer.
fn parse(out: &[u8]) -> std::result::Result<Option<Credentials>, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let a: Answer =
        serde_json::from_slice(out).map_err(|e| format!("not the JSON docker expects: {e}"))?;
    if a.username == "<token>" {
        return Err(
            "an identity token, which berth does not use: run `berth login` for this registry"
                .into(),
        );
    }
    if a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: a.username,
        password: a.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_docker_writes_them() {
        let c = parse(br#"{"ServerURL":"r","Username":"u","Secret":"s"}"#)
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "s"));
        assert_eq!(parse(br#"{"Username":"u","Secret":""}"#).unwrap(), None);
        assert!(parse(br#"{"Username":"<token>","Secret":"t"}"#)
            .unwrap_err()
            .contains("identity token"));
        assert!(parse(b"nonsense").unwrap_err().contains("not the JSON"));
    }

    #[test]
    fn helper_names_cannot_reach_other_programs() {
        assert_eq!(
            program("osxkeychain").unwrap(),
            "docker-credential-osxkeychain"
        );
        for bad in ["", "../../bin/sh", "a b", "x/y"] {
            assert!(program(bad).is_err(), "{bad:?}");
        }
    }
}
