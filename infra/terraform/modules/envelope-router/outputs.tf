output "edge_url" {
  description = "HTTPS URL of the api+delivery service (POST /send, GET /connect, …)."
  value       = google_cloud_run_v2_service.edge.uri
}

output "redis_host" {
  description = "Private address of the Memorystore instance."
  value       = google_redis_instance.this.host
}

output "service_accounts" {
  description = "Service account email of each role."
  value = {
    edge        = google_service_account.edge.email
    processor   = google_service_account.processor.email
    ingest_mqtt = google_service_account.ingest_mqtt.email
  }
}

output "jwt_secret_id" {
  description = "Secret Manager secret to fill with the HS256 JWT secret (gcloud secrets versions add)."
  value       = google_secret_manager_secret.jwt.secret_id
}
