//! The Kafka identity of a service account: its SCRAM user `<namespace>.<serviceAccount>` and
//! principal `User:<namespace>.<serviceAccount>`, and how to tell Ferry's principals from every
//! other (the admin, `User:ANONYMOUS`, other tools'), which Ferry never touches.

/// The SCRAM user name of a service account: `<namespace>.<serviceAccount>`. Namespaces cannot
/// contain dots, so the first dot always separates the two.
pub fn username(namespace: &str, service_account: &str) -> String {
    format!("{namespace}.{service_account}")
}

/// The Kafka principal of a service account.
pub fn principal(namespace: &str, service_account: &str) -> String {
    format!("User:{}", username(namespace, service_account))
}

/// The namespace and service account of a Ferry-shaped principal (`User:<ns>.<sa>`).
pub fn identity_of(principal: &str) -> Option<(String, String)> {
    principal
        .strip_prefix("User:")
        .and_then(|user| user.split_once('.'))
        .map(|(ns, sa)| (ns.to_owned(), sa.to_owned()))
}

/// Whether a principal has the shape Ferry gives its own (`User:<ns>.<sa>`). The admin,
/// `User:ANONYMOUS`, `User:*` and other tools' principals never do.
pub fn is_ferry_shaped(principal: &str) -> bool {
    principal
        .strip_prefix("User:")
        .and_then(|user| user.split_once('.'))
        .is_some_and(|(ns, sa)| is_dns_label(ns) && !sa.is_empty() && !sa.contains('*'))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ferry_shaped_principals() {
        assert!(is_ferry_shaped("User:shop.user-service"));
        assert!(is_ferry_shaped("User:shop.svc.with.dots"));
        for p in [
            "User:admin",
            "User:ANONYMOUS",
            "User:*",
            "User:.x",
            "User:Shop.x",
            "Group:a.b",
            "User:a.*",
        ] {
            assert!(!is_ferry_shaped(p), "{p}");
        }
    }

    #[test]
    fn a_principal_names_its_identity() {
        assert_eq!(principal("shop", "user-service"), "User:shop.user-service");
        assert_eq!(
            identity_of("User:shop.svc.with.dots"),
            Some(("shop".to_owned(), "svc.with.dots".to_owned()))
        );
        assert_eq!(identity_of("User:admin"), None);
    }
}
