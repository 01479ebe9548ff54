//! Kafka administration that rdkafka does not offer safely, wrapped once: ACLs and SCRAM
//! credentials (and, with the topic controller, incremental config changes).

pub mod acls;
mod native;
pub mod scram;

pub use native::NativeError;
