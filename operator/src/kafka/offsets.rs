//! Offsets for lag: the committed offsets of many consumer groups and the end (or start)
//! offsets of many partitions, in as few requests as librdkafka allows.
//!
//! - End offsets: one `rd_kafka_ListOffsets` for every partition of every topic (librdkafka
//!   sends one ListOffsets request per partition leader).
//! - Committed offsets: `rd_kafka_ListConsumerGroupOffsets` takes one group per call (its
//!   documented limit, librdkafka 2.12), so every group's call is started on one queue at
//!   once and the answers are collected as they come: the OffsetFetch requests are pipelined
//!   to the group coordinators, one thread waits for all of them. They go through a consumer
//!   handle of their own ([`KafkaAdmin`]'s group handle): on an admin client, a NOT_COORDINATOR
//!   answer crashes librdkafka 2.12 (librdkafka#5040).

use std::{
    collections::BTreeMap,
    ffi::{CString, c_void},
    ptr,
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    admin::AdminClient,
    bindings as rd,
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _},
    types::{RDKafkaErrorCode, RDKafkaRespErr},
};

use super::{
    Error, KafkaAdmin, Refusal, Result,
    native::{self, Owned, code, string},
};

/// A topic and partition.
pub type Partition = (String, i32);

/// Which offset of a partition to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// The log start offset (after retention deleted older records).
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
}

/// What one group has committed, or why Kafka would not say.
pub type Committed = std::result::Result<BTreeMap<Partition, i64>, Refusal>;

fn partition_list(
    partitions: &[Partition],
    offset: i64,
) -> Result<Owned<rd::rd_kafka_topic_partition_list_t>> {
    let names = partitions
        .iter()
        .map(|(t, _)| CString::new(t.as_str()).map_err(|_| Error::BadName(t.clone())))
        .collect::<Result<Vec<_>>>()?;
    // SAFETY: the list copies each topic name; it is destroyed by the guard.
    unsafe {
        let list = Owned {
            ptr: rd::rd_kafka_topic_partition_list_new(
                i32::try_from(partitions.len()).unwrap_or(i32::MAX),
            ),
            destroy: rd::rd_kafka_topic_partition_list_destroy,
        };
        for (name, (_, partition)) in names.iter().zip(partitions) {
            let element =
                rd::rd_kafka_topic_partition_list_add(list.ptr, name.as_ptr(), *partition);
            (*element).offset = offset;
        }
        Ok(list)
    }
}

/// Copies a partition list librdkafka owns: per partition, its offset or its error.
///
/// # Safety
/// `list` is null or a valid list that lives for the duration of the call.
unsafe fn read_list(
    list: *const rd::rd_kafka_topic_partition_list_t,
) -> Vec<(Partition, std::result::Result<i64, RDKafkaErrorCode>)> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller; `elems` has `cnt` elements.
    unsafe {
        let count = usize::try_from((*list).cnt).unwrap_or(0);
        (0..count)
            .map(|i| {
                let e = &*(*list).elems.add(i);
                let key = (string(e.topic), e.partition);
                if e.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    (key, Ok(e.offset))
                } else {
                    (key, Err(code(e.err)))
                }
            })
            .collect()
    }
}

async fn list_offsets(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    partitions: &[Partition],
    spec: Spec,
    timeout: Duration,
) -> Result<BTreeMap<Partition, std::result::Result<i64, RDKafkaErrorCode>>> {
    let offset = match spec {
        Spec::Earliest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_EARLIEST as i64,
        Spec::Latest => rd::rd_kafka_OffsetSpec_t::RD_KAFKA_OFFSET_SPEC_LATEST as i64,
    };
    let list = partition_list(partitions, offset)?;
    native::call(
        admin,
        rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTOFFSETS,
        timeout,
        move |rk, options, queue| {
            // SAFETY: the request copies the list, which the guard destroys afterwards.
            unsafe { rd::rd_kafka_ListOffsets(rk, list.ptr, options, queue) };
            drop(list);
        },
        |event| {
            // SAFETY: the event is a ListOffsets result; everything is copied before it is
            // destroyed.
            unsafe {
                let result = rd::rd_kafka_event_ListOffsets_result(event);
                if result.is_null() {
                    return Err(Error::UnexpectedEvent);
                }
                let mut count = 0;
                let infos = rd::rd_kafka_ListOffsets_result_infos(result, &mut count);
                let mut out = BTreeMap::new();
                for i in 0..count {
                    let tp = rd::rd_kafka_ListOffsetsResultInfo_topic_partition(*infos.add(i));
                    let e = &*tp;
                    let key = (string(e.topic), e.partition);
                    let value = if e.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                        Ok(e.offset)
                    } else {
                        Err(code(e.err))
                    };
                    out.insert(key, value);
                }
                Ok(out)
            }
        },
    )
    .await
}

/// Starts one ListConsumerGroupOffsets per group on one queue and collects every answer.
/// Each request carries its group's index as the options' opaque: an answer that failed as a
/// whole names no group, and is still that group's refusal rather than the round's failure.
fn committed_blocking(
    handle: &BaseConsumer,
    groups: &[CString],
    timeout: Duration,
) -> Result<BTreeMap<String, Committed>> {
    // The handle's own (never joined) group reports what happens to it, a broker gone for
    // instance, as events on its queue; nobody needs them, drained so they do not pile up.
    while let Some(event) = handle.poll(Duration::ZERO) {
        if let Err(error) = event {
            tracing::debug!(%error, "offset-fetch handle");
        }
    }
    let rk = handle.client().native_ptr();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `rk` is live while `handle` is borrowed; the queue and every options object are
    // destroyed by their guards after the events that refer to them.
    let queue = Owned {
        ptr: unsafe { rd::rd_kafka_queue_new(rk) },
        destroy: rd::rd_kafka_queue_destroy,
    };
    let mut options = Vec::with_capacity(groups.len());
    for (index, group) in groups.iter().enumerate() {
        // SAFETY: as above; a null partition list asks for every committed partition; the
        // request copies the object, which is destroyed right after. The opaque is an index,
        // never dereferenced.
        unsafe {
            let opts = native::options(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS,
                timeout_ms,
            );
            rd::rd_kafka_AdminOptions_set_opaque(opts.ptr, index as *mut c_void);
            let mut request =
                rd::rd_kafka_ListConsumerGroupOffsets_new(group.as_ptr(), ptr::null());
            rd::rd_kafka_ListConsumerGroupOffsets(rk, &mut request, 1, opts.ptr, queue.ptr);
            rd::rd_kafka_ListConsumerGroupOffsets_destroy(request);
            options.push(opts);
        }
    }
    let deadline = Instant::now() + timeout + Duration::from_secs(5);
    let mut out = BTreeMap::new();
    while out.len() < groups.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout);
        }
        // SAFETY: the queue is valid; a returned event is owned by us.
        let event = Owned {
            ptr: unsafe {
                rd::rd_kafka_queue_poll(
                    queue.ptr,
                    i32::try_from(left.as_millis()).unwrap_or(i32::MAX),
                )
            },
            destroy: rd::rd_kafka_event_destroy,
        };
        if event.ptr.is_null() {
            continue;
        }
        // SAFETY: a ListConsumerGroupOffsets result event; everything is copied out.
        unsafe {
            let index = rd::rd_kafka_event_opaque(event.ptr) as usize;
            let Some(asked) = groups.get(index) else {
                return Err(Error::UnexpectedEvent);
            };
            let asked = asked.to_string_lossy().into_owned();
            let err = rd::rd_kafka_event_error(event.ptr);
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                // The request as a whole failed: timed out, or NOT_COORDINATOR while the
                // group's coordinator moves or loads.
                let refusal = Refusal {
                    code: code(err),
                    message: string(rd::rd_kafka_event_error_string(event.ptr)),
                };
                out.insert(asked, Err(refusal));
                continue;
            }
            let result = rd::rd_kafka_event_ListConsumerGroupOffsets_result(event.ptr);
            if result.is_null() {
                return Err(Error::UnexpectedEvent);
            }
            let mut count = 0;
            let results = rd::rd_kafka_ListConsumerGroupOffsets_result_groups(result, &mut count);
            for i in 0..count {
                let group = *results.add(i);
                let name = string(rd::rd_kafka_group_result_name(group));
                let error = rd::rd_kafka_group_result_error(group);
                let committed = if error.is_null() {
                    Ok(read_list(rd::rd_kafka_group_result_partitions(group))
                        .into_iter()
                        // No committed offset is reported as -1001 (RD_KAFKA_OFFSET_INVALID).
                        .filter_map(|(k, v)| v.ok().filter(|o| *o >= 0).map(|o| (k, o)))
                        .collect())
                } else {
                    Err(Refusal {
                        code: code(rd::rd_kafka_error_code(error)),
                        message: string(rd::rd_kafka_error_string(error)),
                    })
                };
                out.insert(name, committed);
            }
            out.entry(asked).or_insert_with(|| {
                Err(Refusal {
                    code: RDKafkaErrorCode::Fail,
                    message: "Kafka gave no answer for this group".to_owned(),
                })
            });
        }
    }
    Ok(out)
}

impl KafkaAdmin {
    /// The `spec` offset of each partition; a partition Kafka answered with an error is left
    /// out (its leader is moving, or the topic is gone).
    pub async fn list_offsets(
        &self,
        partitions: &[Partition],
        spec: Spec,
    ) -> Result<BTreeMap<Partition, i64>> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut unique = partitions.to_vec();
        unique.sort();
        unique.dedup();
        let listed = match list_offsets(&self.client, &unique, spec, self.timeout).await {
            // librdkafka finds the partitions' leaders in its metadata cache, and a topic it
            // looked up a moment before it existed (a dead-letter topic just created, asked
            // for by the next lag round) stays unknown there until the cache's next full
            // refresh, minutes later: every round failed with "No leaders found" until then.
            // Asking for these topics' metadata refreshes the cache; then once more.
            Err(Error::Request {
                code: RDKafkaErrorCode::NoEnt,
                ..
            }) => {
                self.refresh_metadata(&unique).await;
                list_offsets(&self.client, &unique, spec, self.timeout).await?
            }
            other => other?,
        };
        Ok(listed
            .into_iter()
            .filter_map(|(k, v)| v.ok().map(|o| (k, o)))
            .collect())
    }

    /// Asks the cluster for the metadata of `partitions`' topics, which refreshes librdkafka's
    /// cache of them; a failure leaves the cache as it was (the retry then fails as before).
    async fn refresh_metadata(&self, partitions: &[Partition]) {
        let mut topics: Vec<String> = partitions.iter().map(|(t, _)| t.clone()).collect();
        topics.dedup();
        let client = self.client.clone();
        let timeout = self.timeout;
        let _ = tokio::task::spawn_blocking(move || {
            for topic in &topics {
                if let Err(error) = client.inner().fetch_metadata(Some(topic), timeout) {
                    tracing::debug!(topic, %error, "metadata refresh failed");
                }
            }
        })
        .await;
    }

    /// Every committed offset of each group (a group with none has an empty map).
    pub async fn committed_offsets(
        &self,
        groups: &[String],
    ) -> Result<BTreeMap<String, Committed>> {
        if groups.is_empty() {
            return Ok(BTreeMap::new());
        }
        let names = groups
            .iter()
            .map(|g| CString::new(g.as_str()).map_err(|_| Error::BadName(g.clone())))
            .collect::<Result<Vec<_>>>()?;
        let handle = self.group_handle()?;
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || committed_blocking(&handle, &names, timeout))
            .await
            .map_err(|e| Error::Request {
                code: RDKafkaErrorCode::Fail,
                message: format!("admin call thread failed: {e}"),
            })?
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::{ClientConfig, mocking::MockCluster, types::RDKafkaApiKey};

    use super::*;

    /// librdkafka's own in-process broker, because a real one answers NOT_COORDINATOR only
    /// by chance (a new group on a fresh cluster, a coordinator moving): that answer made
    /// librdkafka 2.12 dereference a null consumer group on an admin handle (librdkafka#5040)
    /// and the operator died with SIGSEGV in its lag round.
    #[tokio::test]
    async fn a_not_coordinator_answer_is_that_groups_refusal_not_a_crash() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let admin = KafkaAdmin::new(&config, Duration::from_secs(5)).expect("admin");
        cluster.request_errors(
            RDKafkaApiKey::OffsetFetch,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR],
        );
        let groups = ["first".to_owned(), "second".to_owned()];
        let committed = admin.committed_offsets(&groups).await.expect("answered");
        assert_eq!(committed.len(), 2, "one answer per group: {committed:?}");
        let refused: Vec<_> = committed.values().filter(|c| c.is_err()).collect();
        assert_eq!(refused.len(), 1, "only the refused group: {committed:?}");
        assert!(
            refused[0]
                .as_ref()
                .is_err_and(|r| r.code == RDKafkaErrorCode::NotCoordinator),
            "Kafka's reason: {committed:?}"
        );
    }
}
