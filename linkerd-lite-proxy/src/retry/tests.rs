use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Empty, Full};
use tokio::time::Instant;

use super::*;
use crate::http::boxed;

fn policy(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        max_request_bytes: 16,
        status_ranges: vec![500..=599],
        timeout: None,
        backoff: ExponentialBackoff::new(
            Duration::from_millis(25),
            Duration::from_millis(250),
            0.0,
        )
        .unwrap(),
    }
}

fn rsp(status: u16) -> Result<Response<Body>, ProxyError> {
    Ok(Response::builder()
        .status(status)
        .body(boxed(Empty::<Bytes>::new()))
        .unwrap())
}

fn post(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("http://web:80/orders")
        .header("x-try", "same")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Runs `send`, answering try `n` with `script(n)`; returns the final status and the
/// (header, body) each try received.
async fn run(
    policy: &RetryPolicy,
    budget: &RetryBudget,
    metrics: &RetryMetrics,
    req: Request<Full<Bytes>>,
    script: impl Fn(usize) -> Option<Result<Response<Body>, ProxyError>>,
) -> (Result<StatusCode, String>, Vec<String>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = &script;
    let result = send(policy, budget, metrics, req, |req| {
        let seen = seen.clone();
        async move {
            let n = seen.lock().unwrap().len();
            let h = req.headers()["x-try"].to_str().unwrap().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            seen.lock().unwrap().push(format!("{h} {body}"));
            match script(n) {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    (result.map(|r| r.status()).map_err(|e| e.to_string()), seen)
}

fn counts(m: &RetryMetrics) -> [u64; 4] {
    [
        m.requests.get(),
        m.successes.get(),
        m.limit_exceeded.get(),
        m.overflow.get(),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_failed_try_is_retried_with_the_same_request_after_the_backoff() {
    let m = RetryMetrics::default();
    let start = Instant::now();
    let (status, seen) = run(
        &policy(3),
        &RetryBudget::default(),
        &m,
        post("order=1"),
        |n| Some(rsp(if n == 0 { 503 } else { 200 })),
    )
    .await;
    assert_eq!(status, Ok(StatusCode::OK));
    assert_eq!(seen, vec!["same order=1", "same order=1"]);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(25),
        "one min backoff"
    );
    assert_eq!(counts(&m), [1, 1, 0, 0]);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_limit_and_return_the_last_answer() {
    let m = RetryMetrics::default();
    let start = Instant::now();
    let (status, seen) = run(&policy(3), &RetryBudget::default(), &m, post(""), |n| {
        Some(rsp(500 + n as u16))
    })
    .await;
    assert_eq!(status, Ok(StatusCode::from_u16(503).unwrap()));
    assert_eq!(seen.len(), 4);
    assert_eq!(start.elapsed(), Duration::from_millis(25 + 50 + 100));
    assert_eq!(counts(&m), [3, 0, 1, 0]);

    // Statuses outside the ranges and errors past the endpoint are not retried.
    let (status, seen) = run(&policy(3), &RetryBudget::default(), &m, post(""), |_| {
        Some(rsp(404))
    })
    .await;
    assert_eq!((status, seen.len()), (Ok(StatusCode::NOT_FOUND), 1));
    let (status, seen) = run(&policy(3), &RetryBudget::default(), &m, post(""), |_| {
        Some(Err(ProxyError::Upstream("reset".into())))
    })
    .await;
    assert_eq!((status, seen.len()), (Err("endpoint failed".into()), 1));
}

#[tokio::test(start_paused = true)]
async fn connection_failures_are_retried() {
    let m = RetryMetrics::default();
    let (status, seen) = run(&policy(1), &RetryBudget::default(), &m, post("x"), |n| {
        Some(if n == 0 {
            Err(ProxyError::Connect("refused".into()))
        } else {
            rsp(200)
        })
    })
    .await;
    assert_eq!((status, seen.len()), (Ok(StatusCode::OK), 2));
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_failure_unchanged() {
    let m = RetryMetrics::default();
    let budget = RetryBudget::new(BudgetParams {
        ratio: 0.5,
        min_per_second: 0,
        ttl: Duration::from_secs(10),
    });
    let mut tries = 0;
    for _ in 0..10 {
        let (status, seen) = run(&policy(3), &budget, &m, post(""), |_| Some(rsp(503))).await;
        assert_eq!(status, Ok(StatusCode::SERVICE_UNAVAILABLE));
        tries += seen.len();
    }
    // Ten requests earn five retries.
    assert_eq!(tries, 15);
    assert_eq!(m.requests.get(), 5);
    assert_eq!(m.overflow.get() + m.limit_exceeded.get(), 10);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limit_are_sent_once() {
    let m = RetryMetrics::default();
    let (status, seen) = run(
        &policy(3),
        &RetryBudget::default(),
        &m,
        post("seventeen bytes!!"),
        |_| Some(rsp(503)),
    )
    .await;
    assert_eq!(
        (status, seen.len()),
        (Ok(StatusCode::SERVICE_UNAVAILABLE), 1)
    );
    assert_eq!(counts(&m), [0, 0, 0, 0]);

    // Without a content-length, the copy breaks as the body streams.
    let mut req = post("seventeen bytes!!");
    req.headers_mut().remove(header::CONTENT_LENGTH);
    let (status, seen) = run(&policy(3), &RetryBudget::default(), &m, req, |_| {
        Some(rsp(503))
    })
    .await;
    assert_eq!(
        (status, seen.len()),
        (Ok(StatusCode::SERVICE_UNAVAILABLE), 1)
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_try_is_retried() {
    let m = RetryMetrics::default();
    let mut p = policy(2);
    p.timeout = Some(Duration::from_secs(1));
    let start = Instant::now();
    let (status, seen) = run(&p, &RetryBudget::default(), &m, post("x"), |n| {
        (n > 0).then(|| rsp(200))
    })
    .await;
    assert_eq!((status, seen.len()), (Ok(StatusCode::OK), 2));
    assert_eq!(start.elapsed(), Duration::from_millis(1025));

    // Every try hanging: the last one's timeout is the answer.
    let (status, seen) = run(&p, &RetryBudget::default(), &m, post("x"), |_| None).await;
    assert_eq!((status, seen.len()), (Err("response timed out".into()), 3));
}
