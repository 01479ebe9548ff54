//! How an error is written for a person (a Kubernetes Event, a dead-letter reason, a log
//! field): with its causes, since libraries' own messages often name only the stage that
//! failed (hyper-util's "client error (Connect)", rdkafka's "Admin operation error").

/// `outer: inner: root`, e.g. "client error (Connect): tcp connect error: Connection refused
/// (os error 111)".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_the_error() {
        let e = Outer(std::io::Error::other("root cause"));
        assert_eq!(super::chain(&e), "outer: root cause");
    }
}
