//! Names both binaries must agree on: the operator creates and grants access to these topics,
//! the worker produces to and consumes from them.

/// The retry topic of one delay tier: `<topic>.<group>.retry.<delay>`, with the delay exactly
/// as the EventConsumer spells it (`5s`, `1m`), so the operator and the worker, which both get
/// it from the spec, always name the same topic.
pub fn retry_topic(topic: &str, group: &str, delay: &str) -> String {
    format!("{topic}.{group}.retry.{delay}")
}

/// The dead-letter topic an EventConsumer gets when it names none: `<group>.dlq`.
pub fn default_dead_letter_topic(group: &str) -> String {
    format!("{group}.dlq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_shapes() {
        assert_eq!(
            retry_topic("orders.v1", "notification-svc", "5s"),
            "orders.v1.notification-svc.retry.5s"
        );
        assert_eq!(default_dead_letter_topic("shop.notify"), "shop.notify.dlq");
    }
}
