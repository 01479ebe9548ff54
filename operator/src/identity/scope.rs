//! What the identity controller reconciles: the whole scope (one namespace, or all) as one
//! object, because ACLs depend on every resource at once (a service account may produce to one
//! topic and consume from three).
//!
//! A scope is not an API object. It implements [`Resource`] only so kube-runtime's `applier`
//! (the engine under every `Controller`) can schedule it: one reconcile at a time, debounced
//! triggers, requeues and error backoff exactly as the EventTopic controller gets them.

use std::borrow::Cow;

use kube::{
    Resource,
    api::ObjectMeta,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};

/// The operator's scope: `namespace`, or every namespace.
#[derive(Debug, Clone)]
pub struct Scope {
    metadata: ObjectMeta,
}

impl Scope {
    /// The scope of an operator watching `namespace` (all with `None`).
    pub fn new(namespace: Option<&str>) -> Self {
        Self {
            metadata: ObjectMeta {
                name: Some(namespace.unwrap_or("all-namespaces").to_owned()),
                ..Default::default()
            },
        }
    }

    /// A store holding only this scope, and the reference the triggers name it by.
    pub fn store(&self) -> (Store<Scope>, ObjectRef<Scope>) {
        let mut writer = Writer::<Scope>::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(self.clone()));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        (writer.as_reader(), ObjectRef::from_obj(self))
    }
}

impl Resource for Scope {
    type DynamicType = ();
    type Scope = k8s_openapi::ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Scope".into()
    }

    fn group(_: &()) -> Cow<'_, str> {
        "identity.ferry.dev".into()
    }

    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(_: &()) -> Cow<'_, str> {
        "scopes".into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_holds_the_one_scope() {
        let scope = Scope::new(Some("shop"));
        let (store, key) = scope.store();
        assert_eq!(key.name, "shop");
        assert!(store.get(&key).is_some());
        assert_eq!(store.state().len(), 1);
        assert_eq!(Scope::new(None).store().1.name, "all-namespaces");
    }
}
