//! The trust anchors and the issuer: valid, chained, and not expiring soon.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;

use super::{EXPIRY_WARNING, IDENTITY, api_failure};
use crate::check::cluster::{Fetched, RawApi};
use crate::check::{CheckResult, Report, Status};
use crate::names;

/// Checks the trust anchors and the issuer; returns the anchors' digest when they parse.
pub(super) async fn checks(
    api: &RawApi,
    ns: &str,
    now: SystemTime,
    r: &mut Report,
) -> Option<String> {
    let anchors_desc = "trust anchors are valid";
    let cm_path = format!(
        "/api/v1/namespaces/{ns}/configmaps/{}",
        names::TRUST_ROOTS_CONFIGMAP
    );
    let rotate = "rotate the trust anchor and re-inject workloads";
    let anchors_pem = match api.get(&cm_path).await {
        Ok(Fetched::Found(cm)) => cm
            .pointer(&format!(
                "/data/{}",
                names::TRUST_ROOTS_KEY.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(Value::as_str)
            .map(str::to_string),
        Ok(Fetched::NotFound) => None,
        Err(e) => {
            r.results.push(api_failure(IDENTITY, anchors_desc, e));
            return None;
        }
    };
    let Some(anchors_pem) = anchors_pem else {
        r.results.push(CheckResult::fail(
            IDENTITY,
            anchors_desc,
            Status::Error,
            format!(
                "configmap {ns}/{} or its key {} is missing",
                names::TRUST_ROOTS_CONFIGMAP,
                names::TRUST_ROOTS_KEY
            ),
            "re-install the control plane",
        ));
        return None;
    };
    let expiries = match anchor_expiries(&anchors_pem) {
        Ok(e) => e,
        Err(msg) => {
            r.results.push(CheckResult::fail(
                IDENTITY,
                anchors_desc,
                Status::Error,
                msg,
                rotate,
            ));
            return None;
        }
    };
    let expired: Vec<String> = expiries
        .iter()
        .filter(|(_, t)| *t <= now)
        .map(|(s, t)| format!("{s} expired at {}", humantime::format_rfc3339_seconds(*t)))
        .collect();
    if expired.is_empty() {
        r.results.push(CheckResult::ok(IDENTITY, anchors_desc));
        let soon: Vec<String> = expiries
            .iter()
            .filter(|(_, t)| *t <= now + EXPIRY_WARNING)
            .map(|(s, t)| format!("{s} expires at {}", humantime::format_rfc3339_seconds(*t)))
            .collect();
        let desc = "trust anchors are valid for at least 60 days";
        r.results.push(if soon.is_empty() {
            CheckResult::ok(IDENTITY, desc)
        } else {
            CheckResult::fail(IDENTITY, desc, Status::Warning, soon.join("\n"), rotate)
        });
    } else {
        r.results.push(CheckResult::fail(
            IDENTITY,
            anchors_desc,
            Status::Error,
            expired.join("\n"),
            rotate,
        ));
    }

    let issuer_desc = "issuer certificate chains to the trust anchors";
    let secret_path = format!("/api/v1/namespaces/{ns}/secrets/{}", names::ISSUER_SECRET);
    let issuer_hint = "create a new issuer signed by the trust anchor and update the secret";
    match api.get(&secret_path).await {
        Ok(Fetched::Found(secret)) => {
            let field = |k: &str| {
                secret["data"][k]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .and_then(|b| String::from_utf8(b).ok())
            };
            match (field("tls.crt"), field("tls.key")) {
                (Some(crt), Some(key)) => {
                    match identity::pki::check(&anchors_pem, &crt, &key, now) {
                        Ok(info) => {
                            r.results.push(CheckResult::ok(IDENTITY, issuer_desc));
                            let desc = "issuer certificate is valid for at least 60 days";
                            r.results
                                .push(if info.issuer_not_after > now + EXPIRY_WARNING {
                                    CheckResult::ok(IDENTITY, desc)
                                } else {
                                    CheckResult::fail(
                                        IDENTITY,
                                        desc,
                                        Status::Warning,
                                        format!(
                                            "{} expires at {}",
                                            info.issuer_subject,
                                            humantime::format_rfc3339_seconds(
                                                info.issuer_not_after
                                            )
                                        ),
                                        issuer_hint,
                                    )
                                });
                        }
                        Err(e) => r.results.push(CheckResult::fail(
                            IDENTITY,
                            issuer_desc,
                            Status::Error,
                            e.to_string(),
                            issuer_hint,
                        )),
                    }
                }
                _ => r.results.push(CheckResult::fail(
                    IDENTITY,
                    issuer_desc,
                    Status::Error,
                    format!(
                        "secret {ns}/{} lacks base64 PEM tls.crt and tls.key",
                        names::ISSUER_SECRET
                    ),
                    issuer_hint,
                )),
            }
        }
        Ok(Fetched::NotFound) => r.results.push(CheckResult::fail(
            IDENTITY,
            issuer_desc,
            Status::Error,
            format!("secret {ns}/{} does not exist", names::ISSUER_SECRET),
            "re-install the control plane",
        )),
        Err(e) => r.results.push(api_failure(IDENTITY, issuer_desc, e)),
    }
    identity::pki::trust_anchors_digest(&anchors_pem).ok()
}

/// Each anchor's subject and expiry.
fn anchor_expiries(pem: &str) -> Result<Vec<(String, SystemTime)>, String> {
    let ders =
        identity::pki::parse_pem_certs(pem, "trust anchor bundle").map_err(|e| e.to_string())?;
    ders.iter()
        .enumerate()
        .map(|(i, der)| {
            let (_, cert) = x509_parser::parse_x509_certificate(der)
                .map_err(|_| format!("trust anchor bundle certificate #{i} is not valid x.509"))?;
            let secs = cert.validity().not_after.timestamp();
            let t = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(secs).unwrap_or_default());
            Ok((cert.subject().to_string(), t))
        })
        .collect()
}
