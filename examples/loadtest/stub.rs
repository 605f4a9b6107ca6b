//! A fast loopback stub of what `payrules run` talks to: the commercetools API (OAuth token,
//! payments, orders, the order-of-a-payment query), the Checkout Payment Intents API and the
//! release webhook.
//!
//! Its state is what the published messages say: the load tool shows every message to the
//! stub's [`StreamView`] right before publishing it, so a read returns the payment or order as
//! commercetools would have it at that moment (for a backlog: the final state). Each release
//! (webhook POST) and cancel (payment-intent POST) is timestamped on arrival.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use payrules::message::Message;
use payrules::view::{CommerceView, StreamView};
use tokio::net::TcpListener;

pub(crate) const PROJECT: &str = "loadtest";

/// One effect the stub received.
#[derive(Debug, Clone)]
pub(crate) struct Effect {
    /// `release:{order}` or `cancel:{payment}`.
    pub key: String,
    /// The message that caused it (releases; `None` for cancels).
    pub message_id: Option<String>,
    /// The payment (cancels).
    pub payment_id: Option<String>,
    /// Arrival, since the stub started.
    pub at: Instant,
}

pub(crate) struct Stub {
    pub addr: SocketAddr,
    view: StreamView,
    effects: Mutex<Vec<Effect>>,
    started: Instant,
    /// Requests served.
    pub requests: AtomicU64,
    /// Arrival of the first and the latest request, in µs since `started` (0 = none yet).
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Stub {
    /// Starts the stub on a free loopback port.
    pub(crate) async fn start() -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let addr = listener.local_addr().expect("stub addr");
        let stub = Arc::new(Self {
            addr,
            view: StreamView::new(),
            effects: Mutex::new(Vec::new()),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            first_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
        });
        let s = stub.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(s.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        stub
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shows a message to the stub's commercetools state.
    pub(crate) fn observe(&self, m: &Message) {
        self.view.observe(m);
    }

    /// Everything received so far.
    pub(crate) fn effects(&self) -> Vec<Effect> {
        self.effects.lock().unwrap().clone()
    }

    /// Forgets the effects and request times (between phases).
    pub(crate) fn reset(&self) {
        self.effects.lock().unwrap().clear();
        self.requests.store(0, Ordering::SeqCst);
        self.first_us.store(0, Ordering::SeqCst);
        self.last_us.store(0, Ordering::SeqCst);
    }

    /// First and latest request arrival.
    pub(crate) fn request_window(&self) -> Option<(Instant, Instant)> {
        let first = self.first_us.load(Ordering::SeqCst);
        let last = self.last_us.load(Ordering::SeqCst);
        (first > 0).then(|| {
            (
                self.started + std::time::Duration::from_micros(first),
                self.started + std::time::Duration::from_micros(last),
            )
        })
    }

    /// The latest request arrival, if any.
    pub(crate) fn last_request(&self) -> Option<Instant> {
        self.request_window().map(|(_, l)| l)
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let now = Instant::now();
        let us = (now - self.started).as_micros().max(1) as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .first_us
            .compare_exchange(0, us, Ordering::SeqCst, Ordering::SeqCst);
        self.last_us.fetch_max(us, Ordering::SeqCst);

        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (&method, segs.as_slice()) {
            (&Method::POST, ["oauth", "token"]) => json(
                StatusCode::OK,
                br#"{"access_token":"loadtest-token","token_type":"Bearer","expires_in":172800,"scope":"manage_project:loadtest"}"#.to_vec(),
            ),
            (&Method::GET, [p, "payments", id]) if *p == PROJECT => {
                match self.view.payment(id).await.ok().flatten() {
                    Some(pay) => json(StatusCode::OK, serde_json::to_vec(&pay).unwrap()),
                    None => not_found(),
                }
            }
            (&Method::GET, [p, "orders", id]) if *p == PROJECT => {
                match self.view.order(id).await.ok().flatten() {
                    Some(o) => json(StatusCode::OK, serde_json::to_vec(&o).unwrap()),
                    None => not_found(),
                }
            }
            (&Method::GET, [p, "orders"]) if *p == PROJECT => {
                let params = parse_query(&query);
                let pid = params.get("var.pid").cloned().unwrap_or_default();
                let results = self.view.orders_for_payment(&pid).await.unwrap_or_default();
                json(
                    StatusCode::OK,
                    serde_json::to_vec(&serde_json::json!({
                        "limit": 500, "offset": 0, "count": results.len(), "results": results
                    }))
                    .unwrap(),
                )
            }
            (&Method::POST, ["checkout", p, "payment-intents", pid]) if *p == PROJECT => {
                self.effects.lock().unwrap().push(Effect {
                    key: format!("cancel:{pid}"),
                    message_id: None,
                    payment_id: Some(pid.to_string()),
                    at: now,
                });
                json(StatusCode::OK, br#"{"outcome":"approved"}"#.to_vec())
            }
            (&Method::POST, ["webhook"]) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                self.effects.lock().unwrap().push(Effect {
                    key: v["key"].as_str().unwrap_or_default().to_string(),
                    message_id: v["message_id"].as_str().map(str::to_string),
                    payment_id: None,
                    at: now,
                });
                json(StatusCode::OK, b"{}".to_vec())
            }
            _ => json(
                StatusCode::NOT_FOUND,
                format!(r#"{{"statusCode":404,"message":"stub: no route for {method} {path}"}}"#)
                    .into_bytes(),
            ),
        }
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        br#"{"statusCode":404,"message":"not found","errors":[{"code":"ResourceNotFound","message":"not found"}]}"#.to_vec(),
    )
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
