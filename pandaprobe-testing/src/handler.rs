//! What happens to one request: read it, record it, then apply its fault or answer it
//! normally, and record the outcome.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::oneshot;

use crate::answers::{canned, quota_exceeded, raw, Answer};
use crate::contract::answer_normally;
use crate::records::{header_vec, Req};
use crate::state::{Shared, Ticket};
use crate::{Fault, RequestInfo};

/// Returned to hyper to close the connection without answering.
#[derive(Debug)]
pub(crate) struct CloseWithoutAnswer;

impl fmt::Display for CloseWithoutAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection closed without an answer (injected fault)")
    }
}

impl std::error::Error for CloseWithoutAnswer {}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseWithoutAnswer> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| CloseWithoutAnswer)?
        .to_bytes();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    };
    let request_id = req.headers.get("x-request-id").cloned();
    let ticket = shared.arrive(&req);
    let fault = shared.faults().pick(&req.path, || RequestInfo {
        method: req.method.as_str().to_owned(),
        path: req.path.clone(),
        headers: header_vec(&req.headers),
        body: req.body.clone(),
        index: ticket.index(),
    });
    let answer = match &fault {
        None => answer_normally(&shared, &req),
        Some(Fault::Status(status)) => canned(*status, &req.path, None),
        Some(Fault::RetryAfter {
            status,
            retry_after,
        }) => canned(*status, &req.path, Some(retry_after)),
        Some(Fault::QuotaExceeded) => quota_exceeded(shared.quota().limit_or_hobby()),
        Some(Fault::Raw {
            status,
            headers,
            body,
        }) => raw(*status, headers, body.clone()),
        Some(Fault::Reset) => {
            shared.complete(ticket, None, fault, None);
            return Err(CloseWithoutAnswer);
        }
        Some(Fault::StoreThenReset) => {
            let mut answer = answer_normally(&shared, &req);
            tokio::time::sleep(answer.work()).await;
            let store = answer.take_store().filter(|_| answer.status().is_success());
            shared.complete(ticket, None, fault, store);
            return Err(CloseWithoutAnswer);
        }
        Some(Fault::Hang) => {
            shared.complete(ticket, None, fault, None);
            // Ends when hyper drops this future: client closed, or server stopped.
            let never: Infallible = std::future::pending().await;
            match never {}
        }
        Some(Fault::Delay(delay)) => {
            // The delayed handling runs in its own task so that it stores even when the
            // client gives up and hyper drops this future.
            let delay = *delay;
            let (tx, rx) = oneshot::channel();
            let task_shared = Arc::clone(&shared);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let answer = answer_normally(&task_shared, &req);
                tokio::time::sleep(answer.work()).await;
                let _ = tx.send(finish(&task_shared, ticket, fault, answer));
            });
            return match rx.await {
                Ok(answer) => Ok(answer.into_response(request_id)),
                Err(_) => Err(CloseWithoutAnswer),
            };
        }
    };
    let work = answer.work();
    if work.is_zero() {
        return Ok(finish(&shared, ticket, fault, answer).into_response(request_id));
    }
    // The write goes on if the client gives up, as on the real server; other connections
    // are served meanwhile.
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::time::sleep(work).await;
        let _ = tx.send(finish(&shared, ticket, fault, answer));
    });
    match rx.await {
        Ok(answer) => Ok(answer.into_response(request_id)),
        Err(_) => Err(CloseWithoutAnswer),
    }
}

/// Record the answer and store what it stores.
fn finish(shared: &Shared, ticket: Ticket, fault: Option<Fault>, mut answer: Answer) -> Answer {
    let store = answer.take_store();
    shared.complete(ticket, Some(answer.status()), fault, store);
    answer
}
