//! Push devices: a registered FCM or APNs token of a user.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::EnvelopeError;
use crate::urn::UserUrn;

/// Longest push token accepted (FCM tokens are ~160 chars, APNs 64 hex digits).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The push provider a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Firebase Cloud Messaging (Android, web).
    Fcm,
    /// Apple Push Notification service.
    Apns,
}

impl Platform {
    /// The lowercase name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Fcm => "fcm",
            Platform::Apns => "apns",
        }
    }
}

impl FromStr for Platform {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fcm" => Ok(Platform::Fcm),
            "apns" => Ok(Platform::Apns),
            _ => Err(EnvelopeError::InvalidField {
                field: "platform",
                reason: "must be \"fcm\" or \"apns\"".into(),
            }),
        }
    }
}

/// A push token. Secret-ish: its `Debug` and `Display` show only a hash prefix, never the token.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceToken(Arc<str>);

impl DeviceToken {
    /// Validates a token: non-empty, printable ASCII, at most [`MAX_TOKEN_LEN`].
    pub fn parse(input: &str) -> Result<Self, EnvelopeError> {
        if input.is_empty() || input.len() > MAX_TOKEN_LEN {
            return Err(EnvelopeError::InvalidField {
                field: "token",
                reason: format!("must be 1-{MAX_TOKEN_LEN} characters"),
            });
        }
        if !input.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EnvelopeError::InvalidField {
                field: "token",
                reason: "must be printable ASCII without spaces".into(),
            });
        }
        Ok(Self(input.into()))
    }

    /// The token itself, for the push sender only. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the token: its storage key and its name in logs.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({}…)", &self.fingerprint()[..12])
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint()[..12])
    }
}

/// A user's registered device, as the device-token store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRegistration {
    /// Whose device it is.
    pub user: UserUrn,
    /// The provider's token.
    pub token: DeviceToken,
    /// Which provider the token is for.
    pub platform: Platform,
    /// First registration, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Latest registration (re-registering refreshes it), milliseconds since the Unix epoch.
    pub updated_at_ms: u64,
}
