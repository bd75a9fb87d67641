//! The host-guest protocol as a hostile peer speaks it: a byte stream read as the frames
//! each side expects (the guest reads hellos and requests, the host reads hello replies,
//! responses and data or log chunks), every decoded frame checked, encoded again and
//! read back equal; and the small parsers of the host's side (vsock CONNECT lines,
//! signal names).
#![no_main]

use std::sync::OnceLock;

use berth_protocol::chunk::{self, Chunk, LogRecord};
use berth_protocol::{
    read_frame, write_frame, Hello, HelloReply, Request, RequestFrame, ResponseFrame,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Frames read from one input, at most.
const MAX_FRAMES: usize = 16;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

/// Encodes `value` as a frame and reads it back.
async fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let mut buf = Vec::new();
    write_frame(&mut buf, value)
        .await
        .expect("a decoded frame encodes");
    read_frame(&mut buf.as_slice())
        .await
        .expect("an encoded frame decodes")
        .expect("an encoded frame is there")
}

/// Reads frames of type `T` until the stream ends or breaks; checks each with `check`.
async fn frames<T, F>(mut input: &[u8], check: F)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    F: Fn(&T),
{
    for _ in 0..MAX_FRAMES {
        match read_frame::<_, T>(&mut input).await {
            Ok(Some(v)) => {
                check(&v);
                assert_eq!(round_trip(&v).await, v, "a frame survives a round trip");
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fn check_request(frame: &RequestFrame) {
    match &frame.request {
        Request::Create(create) => {
            let _ = berth_protocol::validate_mounts(&create.mounts);
            let _ = berth_protocol::validate_extra_hosts(&create.extra_hosts);
            if let Some(net) = &create.network {
                let _ = net.validate();
            }
        }
        Request::Exec(exec) => {
            let _ = format!("{exec:?}");
        }
        other => {
            let _ = format!("{other:?}");
        }
    }
}

async fn chunks(mut input: &[u8]) {
    for _ in 0..MAX_FRAMES {
        match chunk::read_chunk(&mut input).await {
            // An empty Data chunk carries nothing, and nothing is written for it.
            Ok(Some(Chunk::Data(d))) if d.is_empty() => {}
            Ok(Some(c)) => {
                let mut buf = Vec::new();
                chunk::write_chunk(&mut buf, &c)
                    .await
                    .expect("a decoded chunk encodes");
                let mut back = buf.as_slice();
                let again = chunk::read_chunk(&mut back)
                    .await
                    .expect("an encoded chunk decodes")
                    .expect("an encoded chunk is there");
                if let Chunk::Log(r) = &c {
                    assert_eq!(LogRecord::decode(&r.encode()).as_ref(), Some(r));
                }
                assert_eq!(again, c, "a chunk survives a round trip");
            }
            Ok(None) | Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(input);
    runtime().block_on(async {
        match which % 8 {
            0 => frames::<Hello, _>(input, |_| {}).await,
            1 => frames::<RequestFrame, _>(input, check_request).await,
            2 => frames::<HelloReply, _>(input, |_| {}).await,
            3 => frames::<ResponseFrame, _>(input, |_| {}).await,
            4 => chunks(input).await,
            5 => {
                let _ = chunk::receive_all(&mut &input[..], &mut tokio::io::sink()).await;
            }
            6 => {
                if let Some(port) = berth_protocol::parse_connect_line(&text) {
                    let line = format!("CONNECT {port}\n");
                    assert_eq!(berth_protocol::parse_connect_line(&line), Some(port));
                }
            }
            _ => {
                if let Some(n) = berth_protocol::signal::by_name(&text) {
                    assert!((1..=berth_protocol::signal::MAX).contains(&n));
                }
                let _ = berth_protocol::valid_host_name(&text);
                let _ = LogRecord::decode(input);
            }
        }
    });
});
