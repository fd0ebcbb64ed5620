# Secret values are added out of band (gcloud secrets versions add …): never in Terraform state.

resource "google_secret_manager_secret" "jwt" {
  project   = var.project_id
  secret_id = "${local.p}-jwt-secret"
  labels    = var.labels
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret" "apns_key" {
  count     = var.apns == null ? 0 : 1
  project   = var.project_id
  secret_id = "${local.p}-apns-key"
  labels    = var.labels
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret" "mqtt_password" {
  count     = var.mqtt_url == "" ? 0 : 1
  project   = var.project_id
  secret_id = "${local.p}-mqtt-password"
  labels    = var.labels
  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "jwt_readers" {
  for_each = {
    edge      = google_service_account.edge.member
    processor = google_service_account.processor.member
    mqtt      = google_service_account.ingest_mqtt.member
  }
  project   = var.project_id
  secret_id = google_secret_manager_secret.jwt.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret_iam_member" "apns_key_readers" {
  for_each = var.apns == null ? {} : {
    edge      = google_service_account.edge.member
    processor = google_service_account.processor.member
  }
  project   = var.project_id
  secret_id = google_secret_manager_secret.apns_key[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}

resource "google_secret_manager_secret_iam_member" "mqtt_password_reader" {
  count     = var.mqtt_url == "" ? 0 : 1
  project   = var.project_id
  secret_id = google_secret_manager_secret.mqtt_password[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.ingest_mqtt.member
}
