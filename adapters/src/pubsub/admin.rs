//! Topics and subscriptions: created on demand (`--create-resources`, per-instance delivery
//! topics) or verified at start with a message that names what is missing.

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;
use google_cloud_pubsub::client::{SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::{DeadLetterPolicy, ExpirationPolicy, RetryPolicy};

use crate::error::AdapterError;
use crate::pubsub::config::PubSubConfig;

fn code(err: &google_cloud_pubsub::Error) -> Option<Code> {
    err.status().map(|s| s.code)
}

fn wkt(duration: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::try_from(duration).unwrap_or_default()
}

fn failed(what: String, err: impl std::fmt::Display) -> AdapterError {
    AdapterError::Unreachable {
        backend: "pubsub",
        cause: format!("{what}: {err}"),
    }
}

/// Creates `topic` unless it exists.
pub async fn ensure_topic(admin: &TopicAdmin, path: &str) -> Result<(), AdapterError> {
    match admin.create_topic().set_name(path).send().await {
        Ok(_) => Ok(()),
        Err(err) if code(&err) == Some(Code::AlreadyExists) => Ok(()),
        Err(err) => Err(failed(format!("creating topic {path}"), err)),
    }
}

/// Deletes `topic`; a missing one is fine.
pub async fn delete_topic(admin: &TopicAdmin, path: &str) -> Result<(), AdapterError> {
    match admin.delete_topic().set_topic(path).send().await {
        Ok(_) => Ok(()),
        Err(err) if code(&err) == Some(Code::NotFound) => Ok(()),
        Err(err) => Err(failed(format!("deleting topic {path}"), err)),
    }
}

/// Deletes `subscription`; a missing one is fine.
pub async fn delete_subscription(
    admin: &SubscriptionAdmin,
    path: &str,
) -> Result<(), AdapterError> {
    match admin
        .delete_subscription()
        .set_subscription(path)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if code(&err) == Some(Code::NotFound) => Ok(()),
        Err(err) => Err(failed(format!("deleting subscription {path}"), err)),
    }
}

/// What a subscription looks like when we create it.
pub struct SubscriptionSpec<'a> {
    /// Full subscription path.
    pub path: &'a str,
    /// Full topic path.
    pub topic: &'a str,
    /// Dead-letter topic path and attempts, if any.
    pub dead_letter: Option<(&'a str, i32)>,
    /// Deleted by Pub/Sub after this long without subscribers (minimum one day).
    pub expire_after: Option<Duration>,
    /// How long unacked messages are kept (minimum ten minutes).
    pub retention: Option<Duration>,
    /// Redelivery backoff bounds after a nack.
    pub retry_backoff: Option<(Duration, Duration)>,
}

/// Creates the subscription `spec` unless it exists.
pub async fn ensure_subscription(
    admin: &SubscriptionAdmin,
    spec: &SubscriptionSpec<'_>,
) -> Result<(), AdapterError> {
    let mut request = admin
        .create_subscription()
        .set_name(spec.path)
        .set_topic(spec.topic)
        .set_ack_deadline_seconds(30);
    if let Some((topic, attempts)) = spec.dead_letter {
        request = request.set_dead_letter_policy(
            DeadLetterPolicy::new()
                .set_dead_letter_topic(topic)
                .set_max_delivery_attempts(attempts),
        );
    }
    if let Some(ttl) = spec.expire_after {
        request = request.set_expiration_policy(ExpirationPolicy::new().set_ttl(wkt(ttl)));
    }
    if let Some(retention) = spec.retention {
        request = request.set_message_retention_duration(wkt(retention));
    }
    if let Some((min, max)) = spec.retry_backoff {
        request = request.set_retry_policy(
            RetryPolicy::new()
                .set_minimum_backoff(wkt(min))
                .set_maximum_backoff(wkt(max)),
        );
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(err) if code(&err) == Some(Code::AlreadyExists) => Ok(()),
        Err(err) => Err(failed(format!("creating subscription {}", spec.path), err)),
    }
}

/// Makes sure the ingress topic, its dead-letter topic and the processor's subscription exist:
/// creates them with `create_resources`, otherwise fails naming what is missing.
pub async fn prepare_ingress(config: &PubSubConfig, subscribe: bool) -> Result<(), AdapterError> {
    let topics = config.topic_admin().await?;
    let subscriptions = config.subscription_admin().await?;
    let ingress = config.topic_path(&config.ingress_topic);
    let dead = config.topic_path(&config.dead_letter_topic);
    let subscription = config.subscription_path(&config.ingress_subscription);
    if config.create_resources {
        ensure_topic(&topics, &ingress).await?;
        ensure_topic(&topics, &dead).await?;
        if subscribe {
            ensure_subscription(
                &subscriptions,
                &SubscriptionSpec {
                    path: &subscription,
                    topic: &ingress,
                    dead_letter: Some((&dead, config.max_delivery_attempts)),
                    expire_after: None,
                    retention: None,
                    retry_backoff: Some((Duration::from_secs(1), Duration::from_secs(60))),
                },
            )
            .await?;
        }
        return Ok(());
    }
    let missing = |what: &str, name: &str, permission: &str| AdapterError::InvalidSetting {
        setting: "PUBSUB",
        reason: format!(
            "{what} {name} does not exist or is not visible: create it (infra/terraform) or run with \
             --create-resources; this service account needs {permission}"
        ),
    };
    for topic in [&ingress, &dead] {
        if let Err(err) = topics.get_topic().set_topic(topic.as_str()).send().await {
            return Err(match code(&err) {
                Some(Code::NotFound) | Some(Code::PermissionDenied) => {
                    missing("topic", topic, "pubsub.topics.get (roles/pubsub.viewer)")
                }
                _ => failed(format!("checking topic {topic}"), err),
            });
        }
    }
    if subscribe
        && let Err(err) = subscriptions
            .get_subscription()
            .set_subscription(subscription.as_str())
            .send()
            .await
    {
        return Err(match code(&err) {
            Some(Code::NotFound) | Some(Code::PermissionDenied) => missing(
                "subscription",
                &subscription,
                "pubsub.subscriptions.get and pubsub.subscriptions.consume (roles/pubsub.subscriber)",
            ),
            _ => failed(format!("checking subscription {subscription}"), err),
        });
    }
    Ok(())
}
