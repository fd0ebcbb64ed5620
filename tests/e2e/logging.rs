//! JSON logs in the Cloud Logging shape, with the request's trace id; no secrets in them.

use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

use crate::harness::{CIPHERTEXT_B64, Server, envelope, token, user};

#[tokio::test]
async fn json_logs_have_severity_message_and_the_requests_trace() -> Result<()> {
    let server = Server::start(&[
        ("LOG_FORMAT", "json"),
        ("LOG_LEVEL", "debug"),
        ("GOOGLE_CLOUD_PROJECT", "demo-proj"),
    ])
    .await?;
    let (alice, bob) = (user("alice"), user("bob"));
    let cloud_trace = "105445aa7843bc8bf206b12000100000";
    let w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (header, value) in [
        ("x-cloud-trace-context", format!("{cloud_trace}/1;o=1")),
        ("traceparent", format!("00-{w3c_trace}-00f067aa0ba902b7-01")),
    ] {
        let response = server
            .request(Method::POST, "/send")
            .bearer_auth(token(&alice))
            .header(header, value)
            .json(&envelope(&bob))
            .send()
            .await?;
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    for trace in [cloud_trace, w3c_trace] {
        let wanted = format!("projects/demo-proj/traces/{trace}");
        server
            .wait_for_log(
                &["envelope accepted", &wanted],
                1,
                std::time::Duration::from_secs(5),
            )
            .await?;
    }
    let lines = server.logs();
    assert!(lines.len() > 3);
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON: {line}: {e}"))?;
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"]
                .contains(&value["severity"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(
            value["message"].is_string() && value.get("level").is_none(),
            "{line}"
        );
        assert!(value["time"].is_string(), "{line}");
    }
    let accepted: Value =
        serde_json::from_str(&server.log_lines_with(&["envelope accepted", cloud_trace])[0])?;
    assert_eq!(accepted["recipient"], bob.as_str());
    server.assert_not_logged(&[CIPHERTEXT_B64, &token(&alice)]);
    Ok(())
}
