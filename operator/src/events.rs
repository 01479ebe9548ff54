//! The one Kubernetes Event publisher of the operator: every controller records its Events
//! through it, so every note fits the Events API's size limit and a failure to record one is
//! logged, never returned (Events are advisory; the status is the record).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

/// The longest note the API server accepts: `events.k8s.io/v1` refuses an Event whose note is
/// longer than 1 kB (`NoteLengthLimit` = 1024 bytes, kubernetes `pkg/apis/core/validation`).
pub const NOTE_LIMIT: usize = 1024;

/// Records Events on the operator's resources.
#[derive(Clone)]
pub struct Publisher {
    recorder: Recorder,
}

impl Publisher {
    /// A publisher reporting as `reporter` (the operator and this replica).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// Records one Event on `regarding`, the note cut to [`NOTE_LIMIT`]; a failure is logged.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(cap_note(note).to_owned()),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            warn!(
                error = %e,
                reason,
                kind = regarding.kind.as_deref().unwrap_or_default(),
                name = regarding.name.as_deref().unwrap_or_default(),
                "cannot record an Event"
            );
        }
    }
}

/// `note` cut to at most [`NOTE_LIMIT`] bytes, at a character boundary.
pub fn cap_note(note: &str) -> &str {
    if note.len() <= NOTE_LIMIT {
        return note;
    }
    let mut end = NOTE_LIMIT;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_notes_are_kept_whole() {
        assert_eq!(cap_note("created Kafka topic t"), "created Kafka topic t");
        let exact = "x".repeat(NOTE_LIMIT);
        assert_eq!(cap_note(&exact), exact);
    }

    #[test]
    fn long_notes_are_cut_to_the_limit_in_bytes_at_a_character_boundary() {
        let ascii = "x".repeat(NOTE_LIMIT + 10);
        assert_eq!(cap_note(&ascii).len(), NOTE_LIMIT);
        // 2-byte characters: 1,000 of them are 2,000 bytes, which the API server refuses.
        let wide = "é".repeat(1000);
        let cut = cap_note(&wide);
        assert!(cut.len() <= NOTE_LIMIT, "{} bytes", cut.len());
        assert_eq!(cut.chars().count(), NOTE_LIMIT / 2);
        // A 3-byte character straddling the limit is left out whole.
        let straddle = format!("{}€", "x".repeat(NOTE_LIMIT - 1));
        assert_eq!(cap_note(&straddle).len(), NOTE_LIMIT - 1);
    }
}
