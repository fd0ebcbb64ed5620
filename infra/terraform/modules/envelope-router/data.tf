resource "google_redis_instance" "this" {
  project            = var.project_id
  name               = "${local.p}-redis"
  region             = var.region
  tier               = var.redis_tier
  memory_size_gb     = var.redis_memory_size_gb
  redis_version      = "REDIS_7_2"
  authorized_network = var.network
  connect_mode       = "PRIVATE_SERVICE_ACCESS"
  labels             = var.labels

  # Queues must survive a Redis restart: append-only persistence.
  persistence_config {
    persistence_mode = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }
  redis_configs = {
    "maxmemory-policy" = "noeviction"
  }
}

resource "google_firestore_database" "this" {
  count       = var.create_firestore_database ? 1 : 0
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"
}
