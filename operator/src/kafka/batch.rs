//! Batching of admin calls: reconciles run concurrently and each asks about one topic; the
//! batcher gathers what arrives while a request is in flight (up to [`MAX_BATCH`]) and sends it
//! as one Kafka request. With 1,000 EventTopics applied at once this turns thousands of
//! requests into a few dozen.

use std::{collections::HashMap, future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use super::{ConfigOp, Error, KafkaAdmin, NewTopicSpec, Refusal, Result, TopicState};

/// Most topics in one request. Kafka handles far more, but a bounded batch keeps one slow
/// request from holding many reconciles (and stays well under `max.request.size`).
const MAX_BATCH: usize = 250;

type Reply<T> = oneshot::Sender<Result<T>>;

/// Where requests of one kind are sent, each with the channel its answer comes back on.
type Requests<Req, Resp> = mpsc::UnboundedSender<(Req, Reply<Resp>)>;

/// What describing one topic finds.
type Described = std::result::Result<Option<TopicState>, Refusal>;

/// Runs `call` on batches of requests as they arrive, one batch at a time per kind.
fn spawn_batcher<Req, Resp, F, Fut>(
    kind: &'static str,
    call: F,
) -> mpsc::UnboundedSender<(Req, Reply<Resp>)>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Vec<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<Resp>>> + Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Req, Reply<Resp>)>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // A reconcile abandoned at its deadline no longer waits for its answer: asking
            // Kafka for it anyway would only lengthen the queue of those still waiting.
            batch.retain(|(_, reply)| !reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.into_iter().unzip();
            let (size, started) = (requests.len(), std::time::Instant::now());
            let answer = call(requests).await;
            // How big the batches are and how long Kafka takes for each: where a burst waits.
            tracing::debug!(
                kind,
                size,
                took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "Kafka admin batch"
            );
            match answer {
                Ok(responses) => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    });
    tx
}

async fn ask<Req, Resp>(tx: &mpsc::UnboundedSender<(Req, Reply<Resp>)>, req: Req) -> Result<Resp> {
    let (reply, answer) = oneshot::channel();
    tx.send((req, reply)).map_err(|_| Error::BatcherGone)?;
    answer.await.map_err(|_| Error::BatcherGone)?
}

/// Puts each per-topic answer in the order of the requests (Kafka answers in any order).
fn in_order<T>(names: &[String], answers: Vec<(String, T)>, missing: impl Fn() -> T) -> Vec<T> {
    let mut by_name: HashMap<String, T> = answers.into_iter().collect();
    names
        .iter()
        .map(|n| by_name.remove(n).unwrap_or_else(&missing))
        .collect()
}

fn no_answer() -> Refusal {
    Refusal {
        code: rdkafka::types::RDKafkaErrorCode::Fail,
        message: "Kafka gave no answer for this topic".to_owned(),
    }
}

type Outcome = std::result::Result<(), Refusal>;

/// [`KafkaAdmin`] one topic at a time, batched underneath. Must be created inside a Tokio
/// runtime (it spawns its batchers).
#[derive(Clone)]
pub struct Batched {
    admin: KafkaAdmin,
    describe: Requests<String, Described>,
    create: Requests<NewTopicSpec, Outcome>,
    grow: Requests<(String, i32), Outcome>,
    alter: Requests<(String, Vec<ConfigOp>), Outcome>,
    delete: Requests<String, Outcome>,
}

impl Batched {
    /// Starts the batchers for `admin`.
    pub fn new(admin: KafkaAdmin) -> Self {
        let a = Arc::new(admin.clone());
        let describe = {
            let a = Arc::clone(&a);
            spawn_batcher("describe", move |names: Vec<String>| {
                let a = Arc::clone(&a);
                async move {
                    let answers = a.describe_topics(&names).await?;
                    Ok(in_order(&names, answers, || Err(no_answer())))
                }
            })
        };
        let create = {
            let a = Arc::clone(&a);
            spawn_batcher("create", move |topics: Vec<NewTopicSpec>| {
                let a = Arc::clone(&a);
                async move {
                    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
                    let answers = a.create_topics(&topics).await?;
                    Ok(in_order(&names, answers, || Err(no_answer())))
                }
            })
        };
        let grow = {
            let a = Arc::clone(&a);
            spawn_batcher("create_partitions", move |topics: Vec<(String, i32)>| {
                let a = Arc::clone(&a);
                async move {
                    let names: Vec<String> = topics.iter().map(|t| t.0.clone()).collect();
                    let answers = a.create_partitions(&topics).await?;
                    Ok(in_order(&names, answers, || Err(no_answer())))
                }
            })
        };
        let alter = {
            let a = Arc::clone(&a);
            spawn_batcher(
                "alter_configs",
                move |changes: Vec<(String, Vec<ConfigOp>)>| {
                    let a = Arc::clone(&a);
                    async move {
                        let names: Vec<String> = changes.iter().map(|t| t.0.clone()).collect();
                        let answers = a.alter_topic_configs(&changes).await?;
                        Ok(in_order(&names, answers, || Err(no_answer())))
                    }
                },
            )
        };
        let delete = {
            let a = Arc::clone(&a);
            spawn_batcher("delete", move |names: Vec<String>| {
                let a = Arc::clone(&a);
                async move {
                    let answers = a.delete_topics(&names).await?;
                    Ok(in_order(&names, answers, || Err(no_answer())))
                }
            })
        };
        Self {
            admin,
            describe,
            create,
            grow,
            alter,
            delete,
        }
    }

    /// The unbatched client, for calls that are rare.
    pub fn admin(&self) -> &KafkaAdmin {
        &self.admin
    }

    /// The topic as Kafka has it, `None` if it does not exist.
    pub async fn describe(
        &self,
        name: &str,
    ) -> Result<std::result::Result<Option<TopicState>, Refusal>> {
        ask(&self.describe, name.to_owned()).await
    }

    /// Creates a topic.
    pub async fn create(&self, topic: NewTopicSpec) -> Result<Outcome> {
        ask(&self.create, topic).await
    }

    /// Grows a topic to `partitions`.
    pub async fn grow(&self, name: &str, partitions: i32) -> Result<Outcome> {
        ask(&self.grow, (name.to_owned(), partitions)).await
    }

    /// Changes a topic's configs incrementally.
    pub async fn alter(&self, name: &str, ops: Vec<ConfigOp>) -> Result<Outcome> {
        ask(&self.alter, (name.to_owned(), ops)).await
    }

    /// Deletes a topic (already gone counts as deleted).
    pub async fn delete(&self, name: &str) -> Result<Outcome> {
        ask(&self.delete, name.to_owned()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn a_request_nobody_waits_for_is_not_sent() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let tx = spawn_batcher("test", move |requests: Vec<u32>| {
            let recorded = Arc::clone(&recorded);
            async move {
                recorded.lock().expect("lock").push(requests.clone());
                Ok(requests)
            }
        });
        // Both queued before the batcher runs (a current-thread runtime): one caller gave up.
        let (abandoned, gone) = oneshot::channel();
        drop(gone);
        tx.send((1, abandoned)).expect("queued");
        let (reply, answer) = oneshot::channel();
        tx.send((2, reply)).expect("queued");
        assert_eq!(answer.await.expect("answered").expect("sent"), 2);
        assert_eq!(*seen.lock().expect("lock"), vec![vec![2]]);
    }
}
