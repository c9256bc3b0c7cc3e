//! `mesh check`: the checks, their report (text like `linkerd check`, or JSON), and
//! retrying until a deadline.
//!
//! [`cluster`] is the thin Kubernetes glue; [`suite`] decides what each response means.

pub mod cluster;
pub mod suite;

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};

pub use cluster::kube_client;

/// How a check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// ✓
    Ok,
    /// ‼ — worth attention, but not a failure.
    Warning,
    /// × — a failure; `mesh check` exits 1.
    Error,
}

impl Status {
    fn symbol(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warning => "‼",
            Status::Error => "×",
        }
    }

    fn json_name(self) -> &'static str {
        match self {
            Status::Ok => "success",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// The group it belongs to, e.g. `kubernetes-api`.
    pub category: &'static str,
    /// What was checked, phrased as the thing that should hold.
    pub description: String,
    /// How it ended.
    pub status: Status,
    /// What went wrong, for warnings and errors.
    pub message: Option<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl CheckResult {
    /// A passing check.
    pub fn ok(category: &'static str, description: impl Into<String>) -> Self {
        Self {
            category,
            description: description.into(),
            status: Status::Ok,
            message: None,
            hint: None,
        }
    }

    /// A failing (or warning) check with a message and a hint.
    pub fn fail(
        category: &'static str,
        description: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            category,
            description: description.into(),
            status,
            message: Some(message.into()),
            hint: Some(hint.into()),
        }
    }
}

/// Every result of one run, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The results.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// Whether no check failed (warnings allowed).
    pub fn success(&self) -> bool {
        self.results.iter().all(|r| r.status != Status::Error)
    }

    /// The report as `linkerd check` prints it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut current = None;
        for r in &self.results {
            if current != Some(r.category) {
                if current.is_some() {
                    out.push('\n');
                }
                out.push_str(r.category);
                out.push('\n');
                out.push_str(&"-".repeat(r.category.chars().count()));
                out.push('\n');
                current = Some(r.category);
            }
            out.push_str(&format!("{} {}\n", r.status.symbol(), r.description));
            if let Some(m) = &r.message {
                for line in m.lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
            if let Some(h) = &r.hint {
                out.push_str(&format!("    hint: {h}\n"));
            }
        }
        let status = if self.success() {
            Status::Ok
        } else {
            Status::Error
        };
        out.push_str(&format!("\nStatus check results are {}\n", status.symbol()));
        out
    }

    /// The report as JSON, grouped by category.
    pub fn to_json(&self) -> Value {
        let mut categories: Vec<Value> = Vec::new();
        for r in &self.results {
            let check = json!({
                "description": r.description,
                "result": r.status.json_name(),
                "error": r.message,
                "hint": r.hint,
            });
            match categories.last_mut() {
                Some(c) if c["categoryName"] == r.category => {
                    if let Some(list) = c["checks"].as_array_mut() {
                        list.push(check);
                    }
                }
                _ => categories.push(json!({ "categoryName": r.category, "checks": [check] })),
            }
        }
        json!({ "success": self.success(), "categories": categories })
    }
}

/// Runs `attempt` until its report succeeds or `wait` has passed since the first try,
/// sleeping `interval` between tries. Returns the last report and how many tries it took.
pub async fn retry_until<F, Fut>(
    wait: Duration,
    interval: Duration,
    mut attempt: F,
) -> (Report, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Report>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut tries = 0;
    loop {
        tries += 1;
        let report = attempt().await;
        let now = tokio::time::Instant::now();
        if report.success() || now >= deadline {
            return (report, tries);
        }
        tokio::time::sleep(interval.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> Report {
        Report {
            results: vec![CheckResult::fail(
                "mesh",
                "destination is ready",
                Status::Error,
                "503",
                "look at its logs",
            )],
        }
    }

    fn passing() -> Report {
        Report {
            results: vec![
                CheckResult::ok("mesh", "destination is ready"),
                CheckResult::fail(
                    "mesh",
                    "issuer is fresh",
                    Status::Warning,
                    "expires soon",
                    "rotate",
                ),
            ],
        }
    }

    #[test]
    fn text_report_groups_by_category_with_symbols_and_hints() {
        let mut r = passing();
        r.results.insert(
            0,
            CheckResult::ok("kubernetes-api", "can query the Kubernetes API"),
        );
        assert_eq!(
            r.to_text(),
            "kubernetes-api\n--------------\n✓ can query the Kubernetes API\n\nmesh\n----\n\
             ✓ destination is ready\n‼ issuer is fresh\n    expires soon\n    hint: rotate\n\n\
             Status check results are ✓\n"
        );
        assert!(
            failing()
                .to_text()
                .ends_with("Status check results are ×\n")
        );
    }

    #[test]
    fn json_report_says_success_and_results() {
        let j = failing().to_json();
        assert_eq!(j["success"], false);
        assert_eq!(j["categories"][0]["checks"][0]["result"], "error");
        assert_eq!(j["categories"][0]["checks"][0]["hint"], "look at its logs");
        assert_eq!(passing().to_json()["success"], true, "warnings do not fail");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_retries_until_success() {
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let (report, tries) = retry_until(Duration::from_secs(60), Duration::from_secs(5), || {
            calls += 1;
            let r = if calls < 4 { failing() } else { passing() };
            async move { r }
        })
        .await;
        assert!(report.success());
        assert_eq!(tries, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let (report, tries) =
            retry_until(Duration::from_secs(12), Duration::from_secs(5), || async {
                failing()
            })
            .await;
        assert!(!report.success());
        // Tries at 0s, 5s, 10s and a last one at the 12s deadline.
        assert_eq!(tries, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(12));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_means_one_try() {
        let (_, tries) = retry_until(Duration::ZERO, Duration::from_secs(5), || async {
            failing()
        })
        .await;
        assert_eq!(tries, 1);
    }
}
