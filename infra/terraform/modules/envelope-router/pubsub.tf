resource "google_pubsub_topic" "ingress" {
  project = var.project_id
  name    = "envelope-ingress"
  labels  = var.labels
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = "envelope-ingress-dead"
  labels  = var.labels
}

resource "google_pubsub_subscription" "router" {
  project              = var.project_id
  name                 = "envelope-ingress-router"
  topic                = google_pubsub_topic.ingress.id
  ack_deadline_seconds = 30
  labels               = var.labels

  # Never expire: the processors' subscription lives as long as the deployment.
  expiration_policy {
    ttl = ""
  }

  # A transient failure (Redis down) is retried with growing backoff before the last attempt.
  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Parked messages stay inspectable and replayable.
resource "google_pubsub_subscription" "dead_letter_inspect" {
  project                    = var.project_id
  name                       = "envelope-ingress-dead-inspect"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  labels                     = var.labels
}

# The Pub/Sub service agent forwards dead letters: it publishes to the dead-letter topic and
# acknowledges on the source subscription.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_acks_source" {
  project      = var.project_id
  subscription = google_pubsub_subscription.router.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
