data "google_project" "this" {
  project_id = var.project_id
}

locals {
  p                = var.name_prefix
  pubsub_agent     = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  delivery_topics  = "projects/${var.project_id}/topics/delivery-"
  delivery_subs    = "projects/${var.project_id}/subscriptions/delivery-"
  redis_url        = "redis://${google_redis_instance.this.host}:${google_redis_instance.this.port}/0"
  push             = join(",", compact([var.fcm_project_id != "" ? "fcm" : "", var.apns != null ? "apns" : "", var.fcm_project_id == "" && var.apns == null ? "log" : ""]))
  common_env = {
    BUS                = "pubsub"
    DELIVERY           = "pubsub"
    PUBSUB_PROJECT     = var.project_id
    PRESENCE           = "redis"
    STORE              = "redis"
    RATE_LIMIT         = "redis"
    REDIS_URL          = local.redis_url
    DEVICE_TOKENS      = "firestore"
    FIRESTORE_PROJECT  = var.project_id
    GOOGLE_CLOUD_PROJECT = var.project_id
    LOG_FORMAT         = "json"
    PUSH               = local.push
  }
}
