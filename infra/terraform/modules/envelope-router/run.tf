# Cloud Run services: one image, a role each.

locals {
  vpc_access = {
    network    = var.network
    subnetwork = var.subnetwork
  }
}

# api + delivery: the WebSocket edge. Long request timeout (clients reconnect at least hourly),
# high concurrency (each WebSocket holds one request), session affinity for reconnects.
resource "google_cloud_run_v2_service" "edge" {
  project  = var.project_id
  name     = "${local.p}-edge"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"
  labels   = var.labels

  template {
    service_account                  = google_service_account.edge.email
    timeout                          = "3600s"
    max_instance_request_concurrency = 1000
    session_affinity                 = true
    scaling {
      min_instance_count = var.edge_min_instances
      max_instance_count = var.edge_max_instances
    }
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.vpc_access.network
        subnetwork = local.vpc_access.subnetwork
      }
    }
    containers {
      image = var.image
      args  = ["serve"]
      resources {
        limits = {
          cpu    = "2"
          memory = "2Gi"
        }
        # WebSockets and the delivery subscription need CPU outside requests.
        cpu_idle = false
      }
      dynamic "env" {
        for_each = merge(local.common_env, { ROLES = "api,delivery" })
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "JWT_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.jwt.secret_id
            version = "latest"
          }
        }
      }
      startup_probe {
        http_get {
          path = "/readyz"
        }
      }
      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.jwt_readers]
}

# processor: consumes envelope-ingress; always at least one instance, CPU always allocated.
resource "google_cloud_run_v2_service" "processor" {
  project  = var.project_id
  name     = "${local.p}-processor"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  labels   = var.labels

  template {
    service_account = google_service_account.processor.email
    scaling {
      min_instance_count = var.processor_min_instances
      max_instance_count = var.processor_max_instances
    }
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.vpc_access.network
        subnetwork = local.vpc_access.subnetwork
      }
    }
    containers {
      image = var.image
      args  = ["serve"]
      resources {
        limits = {
          cpu    = "2"
          memory = "1Gi"
        }
        cpu_idle = false
      }
      dynamic "env" {
        for_each = merge(
          local.common_env,
          { ROLES = "processor" },
          var.fcm_project_id == "" ? {} : { FCM_PROJECT_ID = var.fcm_project_id },
          var.apns == null ? {} : {
            APNS_KEY_ID      = var.apns.key_id
            APNS_TEAM_ID     = var.apns.team_id
            APNS_TOPIC       = var.apns.topic
            APNS_ENVIRONMENT = var.apns.environment
            APNS_KEY_FILE    = "/secrets/apns/key.p8"
          },
        )
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "JWT_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.jwt.secret_id
            version = "latest"
          }
        }
      }
      dynamic "volume_mounts" {
        for_each = var.apns == null ? [] : [1]
        content {
          name       = "apns"
          mount_path = "/secrets/apns"
        }
      }
    }
    dynamic "volumes" {
      for_each = var.apns == null ? [] : [1]
      content {
        name = "apns"
        secret {
          secret = google_secret_manager_secret.apns_key[0].secret_id
          items {
            version = "latest"
            path    = "key.p8"
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.jwt_readers]
}

# ingest-mqtt: its own service, a client of the broker; always running.
resource "google_cloud_run_v2_service" "ingest_mqtt" {
  count    = var.mqtt_url == "" ? 0 : 1
  project  = var.project_id
  name     = "${local.p}-ingest-mqtt"
  location = var.region
  ingress  = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  labels   = var.labels

  template {
    service_account = google_service_account.ingest_mqtt.email
    scaling {
      min_instance_count = 1
      max_instance_count = 4
    }
    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = local.vpc_access.network
        subnetwork = local.vpc_access.subnetwork
      }
    }
    containers {
      image = var.image
      args  = ["ingest-mqtt"]
      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
        cpu_idle = false
      }
      dynamic "env" {
        for_each = merge(local.common_env, { MQTT_URL = var.mqtt_url })
        content {
          name  = env.key
          value = env.value
        }
      }
      env {
        name = "JWT_SECRET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.jwt.secret_id
            version = "latest"
          }
        }
      }
      env {
        name = "MQTT_PASSWORD"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.mqtt_password[0].secret_id
            version = "latest"
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.mqtt_password_reader]
}

# The edge is public (clients authenticate with JWTs).
resource "google_cloud_run_v2_service_iam_member" "edge_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.edge.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
