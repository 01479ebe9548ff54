//! What a resource asks of Kafka's authorizer, shown in its status (DESIGN §3), so `kubectl get
//! -o yaml` answers "who may write this topic?" without a Kafka admin tool.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Kafka principals a resource declares and the ACLs derived for them. Whether Kafka holds
/// them right now is the `AccessGranted` condition. Never holds a credential.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessStatus {
    /// Principals (`User:<namespace>.<serviceAccount>`) this resource declares; each one's
    /// credential is in the Secret `ferry-kafka-<serviceAccount>` of this namespace.
    #[serde(default)]
    pub principals: Vec<String>,
    /// The ACLs this resource grants, one per line as `<principal> <OPERATION> <Type>:<name>`
    /// (all literal ALLOW from any host).
    #[serde(default)]
    pub acls: Vec<String>,
}
