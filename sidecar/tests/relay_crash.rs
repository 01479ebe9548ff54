//! Crashing the real relay binary while rows stream in: kill -9 at random moments, and three
//! relays competing for one table while the leader is killed. Nothing may be lost, duplicates
//! stay within one batch (`--batch-size` rows: the chunk being marked plus the chunk in Kafka,
//! half a batch each) per crash, and every key's rows reach Kafka in commit order.

#[path = "relay/support.rs"]
mod support;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use ferry_testkit::{ChildProcess, TempTopic, require_env};
use rand::Rng;
use support::*;

/// Writes `keys` keys × `per_key` rows in transactions of `chunk` rows (seq per key grows with
/// every round, so commit order per key is seq order), pausing `pause` between transactions.
async fn write_rows(
    client: &tokio_postgres::Client,
    topic: &str,
    keys: usize,
    per_key: i64,
    chunk: usize,
    pause: Duration,
) {
    let all: Vec<(String, i64)> = (0..per_key)
        .flat_map(|s| (0..keys).map(move |k| (format!("k{k}"), s)))
        .collect();
    for rows in all.chunks(chunk) {
        insert(client, topic, rows, 200).await.expect("insert");
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_duplicates_at_most_a_batch_per_crash() {
    const KEYS: usize = 1_000;
    const PER_KEY: i64 = 50; // 50,000 rows
    const BATCH: usize = 500;
    const KILLS: usize = 20;
    let env = require_env!();
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let writer_client = outbox.schema.connect().await.expect("connect");
    let topic_name = topic.name().to_owned();
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        tokio::spawn(async move {
            // ~500 transactions of 100 rows over ~10 s.
            write_rows(
                &writer_client,
                &topic_name,
                KEYS,
                PER_KEY,
                100,
                Duration::from_millis(20),
            )
            .await;
            writing.store(false, Ordering::SeqCst);
        })
    };

    let batch = format!("--batch-size={BATCH}");
    let relay_args = [batch.as_str(), "--idle-poll-interval=50ms"];
    let mut kills = 0;
    let mut marked_at_kills = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while kills < KILLS || writing.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "kill loop took too long");
        let mut relay = spawn_relay("relay-kill9", env, &outbox.url(), None, &relay_args);
        let alive_ms = rand::rng().random_range(150..900);
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        relay.kill9().await.expect("kill -9");
        kills += 1;
        marked_at_kills.push(outbox.rows().await - outbox.unpublished().await);
    }
    writer.await.expect("writer");
    let marked_during_crashes = *marked_at_kills.last().expect("kills");
    assert!(
        marked_during_crashes > 0,
        "the relays made progress between kills: {marked_at_kills:?}"
    );

    // One last relay drains the rest.
    let relay = spawn_relay("relay-kill9-final", env, &outbox.url(), None, &relay_args);
    outbox
        .stop_once_settled(relay, Duration::from_secs(120))
        .await;

    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), PER_KEY)).collect();
    let records = read_distinct(env, topic.name(), 50_000, Duration::from_secs(120)).await;
    // Everything that is in Kafka by now (the relays are gone) has arrived once we stop
    // seeing new records; read a little longer to count duplicates honestly.
    let extra = read_topic(env, topic.name(), Duration::from_secs(3), |r| {
        r.len() > records.len() + KILLS * BATCH
    })
    .await;
    let records = if extra.len() > records.len() {
        extra
    } else {
        records
    };
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "kill -9: {kills} kills, {} records for 50000 rows, {duplicates} duplicates, progress at kills {marked_at_kills:?}",
        records.len()
    );
    assert!(
        duplicates <= kills * BATCH,
        "{duplicates} duplicates after {kills} crashes exceed one batch ({BATCH}) per crash"
    );
}

/// Reads `ferry_relay_leader` from a relay's `/metrics`.
async fn is_leader(port: u16) -> Option<bool> {
    let body = metrics_body(port, "/metrics").await?;
    Some(body.lines().any(|l| l.trim() == "ferry_relay_leader 1"))
}

/// Waits for exactly one leader (other than `not`) and returns its index; fails if two
/// relays report leadership at once.
async fn find_leader(ports: &[u16], not: Option<usize>, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let mut leaders = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            if is_leader(*port).await == Some(true) {
                leaders.push(i);
            }
        }
        assert!(leaders.len() <= 1, "several leaders at once: {leaders:?}");
        if let Some(&i) = leaders.first()
            && Some(i) != not
        {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_on_one_table_keep_every_keys_commit_order_through_a_leader_crash() {
    const KEYS: usize = 1_000;
    const PER_KEY: i64 = 12;
    const WRITERS: usize = 20;
    let env = require_env!();
    let topic = TempTopic::create(env, 3).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let url = outbox.url();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let args = ["--batch-size=200", "--idle-poll-interval=50ms"];
    let mut relays: Vec<ChildProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| spawn_relay_on(&format!("relay-trio-{i}"), env, &url, *port, &args))
        .collect();

    // 20 writers, each owning 50 keys; each transaction writes one key's next 1–3 rows, so
    // a key's rows are committed one transaction after another (and in id order inside one).
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = outbox.schema.connect().await.expect("connect");
        let topic = topic.name().to_owned();
        writers.push(tokio::spawn(async move {
            let keys: Vec<String> = (w..KEYS)
                .step_by(WRITERS)
                .map(|k| format!("k{k}"))
                .collect();
            let mut next: HashMap<&str, i64> = keys.iter().map(|k| (k.as_str(), 0)).collect();
            let mut round = 0;
            while next.values().any(|s| *s < PER_KEY) {
                for key in &keys {
                    let seq = next[key.as_str()];
                    let n = (1 + (round + key.len()) % 3) as i64;
                    let rows: Vec<(String, i64)> = (seq..(seq + n).min(PER_KEY))
                        .map(|s| (key.clone(), s))
                        .collect();
                    if rows.is_empty() {
                        continue;
                    }
                    insert(&client, &topic, &rows, 64).await.expect("insert");
                    next.insert(key.as_str(), seq + rows.len() as i64);
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Exactly one leader; kill it mid-stream and bring it back as a standby.
    let first = find_leader(&ports, None, Duration::from_secs(30)).await;
    wait_for("rows to flow", Duration::from_secs(30), || async {
        outbox.rows().await > 3_000
    })
    .await;
    relays[first].kill9().await.expect("kill -9 the leader");
    let killed_at = Instant::now();
    let second = find_leader(&ports, Some(first), Duration::from_secs(15)).await;
    let takeover = killed_at.elapsed();
    // The crashed relay comes back as a standby.
    relays[first] = spawn_relay_on("relay-trio-restarted", env, &url, ports[first], &args);
    eprintln!("leader {first} killed; relay {second} took over in {takeover:?}");

    for w in writers {
        w.await.expect("writer");
    }
    let total = KEYS as i64 * PER_KEY;
    wait_for("the backlog to drain", Duration::from_secs(120), || async {
        outbox.unpublished().await == 0
    })
    .await;
    for relay in &mut relays {
        relay
            .terminate(Duration::from_secs(30))
            .await
            .expect("terminate");
    }
    let expected: HashMap<String, i64> = (0..KEYS).map(|k| (format!("k{k}"), PER_KEY)).collect();
    let records = read_distinct(env, topic.name(), total as usize, Duration::from_secs(60)).await;
    let duplicates = check_per_key_order(&records, &expected);
    eprintln!(
        "three relays: {} records for {total} rows, {duplicates} duplicates",
        records.len()
    );
    assert!(
        duplicates <= 200,
        "at most one batch re-published after the leader crash: {duplicates}"
    );
}

/// Drops every packet to and from one loopback TCP port (both ways, with `iptables`), as if
/// the host at that end had vanished without closing anything; the rules go when dropped.
struct Blackhole {
    port: String,
}

impl Blackhole {
    fn rule(&self, action: &str, direction: &str) -> Vec<String> {
        [
            action,
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            direction,
            &self.port,
            "-m",
            "comment",
            "--comment",
            "ferry-relay-test",
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn iptables(args: &[String]) -> std::io::Result<std::process::ExitStatus> {
        std::process::Command::new("iptables").args(args).status()
    }

    fn cut(port: u16) -> Blackhole {
        let hole = Blackhole {
            port: port.to_string(),
        };
        for direction in ["--sport", "--dport"] {
            let status = Self::iptables(&hole.rule("-I", direction))
                .expect("run iptables (Debian package `iptables`; needs CAP_NET_ADMIN)");
            assert!(status.success(), "iptables refused the rule: {status}");
        }
        hole
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        for direction in ["--sport", "--dport"] {
            if let Err(e) = Self::iptables(&self.rule("-D", direction)) {
                eprintln!(
                    "cannot remove the iptables rule for port {}: {e}",
                    self.port
                );
            }
        }
    }
}

/// The leader's host disappears without closing its connections: every packet of its lock
/// session is dropped (not kill -9, which closes sockets). PostgreSQL must notice the silent
/// session within seconds and release the advisory lock, the old leader must stop publishing,
/// and a relay must take over and publish what was written meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_host_goes_silent_is_replaced_within_seconds() {
    let env = require_env!();
    let topic = TempTopic::create(env, 1).await.expect("topic");
    let outbox = TestOutbox::create(env).await;
    let url = outbox.url();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let args = ["--idle-poll-interval=100ms"];
    let mut relays: Vec<ChildProcess> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| spawn_relay_on(&format!("relay-silent-{i}"), env, &url, *port, &args))
        .collect();
    let first = find_leader(&ports, None, Duration::from_secs(30)).await;
    let before: Vec<(String, i64)> = (0..10).map(|k| (format!("s{k}"), 0)).collect();
    outbox.insert(topic.name(), &before).await;
    wait_for(
        "the first rows published",
        Duration::from_secs(30),
        || async { outbox.unpublished().await == 0 },
    )
    .await;

    // The session holding the table's leadership lock (classid is Ferry's lock namespace).
    let lock = outbox
        .client
        .query_one(
            "SELECT a.pid, a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 \
               AND l.objid = 'outbox'::regclass::oid",
            &[&0x4645_5259_u32],
        )
        .await
        .expect("the leader's lock session");
    let (pid, client_port): (i32, i32) = (lock.get(0), lock.get(1));
    let hole = Blackhole::cut(u16::try_from(client_port).expect("a TCP port"));
    let cut_at = Instant::now();
    let after: Vec<(String, i64)> = (0..10).map(|k| (format!("s{k}"), 1)).collect();
    outbox.insert(topic.name(), &after).await;

    wait_for(
        "the old leader to stop leading",
        Duration::from_secs(20),
        || async { is_leader(ports[first]).await == Some(false) },
    )
    .await;
    wait_for(
        "PostgreSQL to drop the leader's silent lock session",
        Duration::from_secs(45),
        || async {
            outbox
                .client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&pid],
                )
                .await
                .expect("count")
                .get::<_, i64>(0)
                == 0
        },
    )
    .await;
    let released = cut_at.elapsed();
    wait_for(
        "the rows written after the cut to be published",
        Duration::from_secs(30),
        || async { outbox.unpublished().await == 0 },
    )
    .await;
    eprintln!(
        "lock released {released:?} after the cut; rows published {:?} after it",
        cut_at.elapsed()
    );
    drop(hole);
    for relay in &mut relays {
        relay
            .terminate(Duration::from_secs(30))
            .await
            .expect("terminate");
    }
    let expected: HashMap<String, i64> = (0..10).map(|k| (format!("s{k}"), 2)).collect();
    let records = read_distinct(env, topic.name(), 20, Duration::from_secs(30)).await;
    check_per_key_order(&records, &expected);
}
