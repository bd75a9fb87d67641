//! `/containers/{id}/exec` and `/exec/{id}/...` handlers.

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::backend::{BackendError, ExecConfig, ExecDetails};
use crate::error::ApiError;
use crate::hijack;
use crate::request::{read_json, Query};
use crate::response::{self, ApiResult};
use crate::router::Ctx;
use crate::types::{self, ExecCreateBody, ExecStartBody, StrSlice};

/// `POST /containers/{id}/exec` → 201 `{"Id": ...}`.
pub async fn create(ctx: &Ctx, id: &str, req: Request<Incoming>) -> ApiResult {
    let body: ExecCreateBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    let cmd = body.cmd.map(StrSlice::into_vec).unwrap_or_default();
    if cmd.is_empty() {
        return Err(ApiError::BadRequest("No exec command specified".into()));
    }
    let cfg = ExecConfig {
        cmd,
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir,
        user: body.user,
        tty: body.tty,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
        privileged: body.privileged,
    };
    let exec_id = ctx.backend.exec_create(id, cfg).await?;
    Ok(response::json(
        StatusCode::CREATED,
        &types::IdResponse { id: exec_id },
    ))
}

/// `POST /exec/{id}/start`: hijacked unless `Detach`. As Docker does, the
/// process is started only after the `101` has gone out: a client that
/// reads the rest of the stream straight from its socket (docker-py) would
/// lose output that arrived together with the headers.
pub async fn start(ctx: &Ctx, id: &str, mut req: Request<Incoming>) -> ApiResult {
    let upgrade = hijack::take_upgrade(&mut req);
    let body: ExecStartBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    let details = ctx.backend.exec_inspect(id).await?;
    let tty = body.tty || details.config.tty;
    if body.detach {
        ctx.backend.exec_start(id, true, tty).await?;
        return Ok(response::status(StatusCode::OK));
    }
    if details.running || details.exit_code.is_some() {
        return Err(ApiError::Conflict(format!(
            "Error: Exec command {id} has already run"
        )));
    }
    let backend = ctx.backend.clone();
    let exec_id = id.to_string();
    let streams = async move {
        backend
            .exec_start(&exec_id, false, tty)
            .await?
            .ok_or_else(|| BackendError::Other(format!("exec {exec_id} started without streams")))
    };
    Ok(hijack::hijack(upgrade, tty, streams))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    let (rows, cols) = crate::containers::size(q)?;
    ctx.backend.exec_resize(id, rows, cols).await?;
    Ok(response::status(StatusCode::OK))
}

/// Docker's JSON for an exec.
pub fn inspect_json(d: ExecDetails) -> types::ExecInspect {
    let mut cmd = d.config.cmd.into_iter();
    types::ExecInspect {
        id: d.id,
        running: d.running,
        exit_code: d.exit_code,
        process_config: types::ProcessConfig {
            tty: d.config.tty,
            entrypoint: cmd.next().unwrap_or_default(),
            arguments: cmd.collect(),
            privileged: d.config.privileged,
            user: d.config.user,
        },
        open_stdin: d.config.attach_stdin,
        open_stderr: d.config.attach_stderr,
        open_stdout: d.config.attach_stdout,
        can_remove: !d.running,
        container_id: d.container_id,
        detach_keys: String::new(),
        pid: d.pid,
    }
}

/// `GET /exec/{id}/json`.
pub async fn inspect(ctx: &Ctx, id: &str) -> ApiResult {
    let d = ctx.backend.exec_inspect(id).await?;
    Ok(response::json(StatusCode::OK, &inspect_json(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_inspect_shape() {
        let d = ExecDetails {
            id: "e1".into(),
            container_id: "c1".into(),
            running: false,
            exit_code: Some(2),
            pid: 0,
            config: ExecConfig {
                cmd: vec!["sh".into(), "-c".into(), "exit 2".into()],
                tty: true,
                attach_stdin: true,
                ..Default::default()
            },
        };
        let v = serde_json::to_value(inspect_json(d)).unwrap();
        assert_eq!(v["ID"], "e1");
        assert_eq!(v["ContainerID"], "c1");
        assert_eq!(v["ExitCode"], 2);
        assert_eq!(v["Running"], false);
        assert_eq!(v["OpenStdin"], true);
        assert_eq!(v["ProcessConfig"]["entrypoint"], "sh");
        assert_eq!(
            v["ProcessConfig"]["arguments"],
            serde_json::json!(["-c", "exit 2"])
        );
        assert_eq!(v["ProcessConfig"]["tty"], true);
    }
}
