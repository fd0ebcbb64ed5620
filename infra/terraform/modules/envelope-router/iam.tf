# One service account per role, least privilege.

resource "google_service_account" "edge" {
  project      = var.project_id
  account_id   = "${local.p}-edge"
  display_name = "envelope-router api+delivery"
}

resource "google_service_account" "processor" {
  project      = var.project_id
  account_id   = "${local.p}-processor"
  display_name = "envelope-router processor"
}

resource "google_service_account" "ingest_mqtt" {
  project      = var.project_id
  account_id   = "${local.p}-mqtt"
  display_name = "envelope-router MQTT ingestor"
}

# api: publishes accepted envelopes.
resource "google_pubsub_topic_iam_member" "edge_publishes_ingress" {
  project = var.project_id
  topic   = google_pubsub_topic.ingress.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.edge.member
}

resource "google_pubsub_topic_iam_member" "mqtt_publishes_ingress" {
  project = var.project_id
  topic   = google_pubsub_topic.ingress.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.ingest_mqtt.member
}

# The readiness check reads the ingress topic.
resource "google_pubsub_topic_iam_member" "viewers_of_ingress" {
  for_each = {
    edge      = google_service_account.edge.member
    processor = google_service_account.processor.member
    mqtt      = google_service_account.ingest_mqtt.member
  }
  project = var.project_id
  topic   = google_pubsub_topic.ingress.name
  role    = "roles/pubsub.viewer"
  member  = each.value
}

# delivery: creates, consumes and deletes only its own delivery-* topics and subscriptions
# (and the janitor deletes those of dead instances). Conditioned on the resource name.
resource "google_project_iam_member" "edge_manages_delivery_topics" {
  project = var.project_id
  role    = "roles/pubsub.editor"
  member  = google_service_account.edge.member
  condition {
    title       = "delivery-topics-only"
    description = "Only delivery-<instanceId> topics and subscriptions."
    expression  = "resource.name.startsWith(\"${local.delivery_topics}\") || resource.name.startsWith(\"${local.delivery_subs}\")"
  }
}

# processor: consumes the ingress subscription, parks poison messages, publishes to delivery-*
# topics; it cannot create topics.
resource "google_pubsub_subscription_iam_member" "processor_consumes" {
  project      = var.project_id
  subscription = google_pubsub_subscription.router.name
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.processor.member
}

resource "google_pubsub_topic_iam_member" "processor_parks_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.processor.member
}

resource "google_project_iam_member" "processor_publishes_delivery" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = google_service_account.processor.member
  condition {
    title       = "delivery-topics-only"
    description = "Publish to delivery-<instanceId> topics only."
    expression  = "resource.name.startsWith(\"${local.delivery_topics}\")"
  }
}

# Device tokens in Firestore: the api registers them, the processor and delivery wake devices.
resource "google_project_iam_member" "datastore_users" {
  for_each = {
    edge      = google_service_account.edge.member
    processor = google_service_account.processor.member
  }
  project = var.project_id
  role    = "roles/datastore.user"
  member  = each.value
}

# FCM sends (processor and delivery wake devices).
resource "google_project_iam_member" "fcm_senders" {
  for_each = var.fcm_project_id == "" ? {} : {
    edge      = google_service_account.edge.member
    processor = google_service_account.processor.member
  }
  project = var.fcm_project_id
  role    = "roles/firebasecloudmessaging.admin"
  member  = each.value
}
