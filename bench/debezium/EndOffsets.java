// bench/debezium/run.sh's stopwatch: waits until the topic's partitions hold `rows` records
// (the sum of their end offsets, polled every 20 ms) and prints the seconds since `start_ms`.
import java.util.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.common.*;

public class EndOffsets {
    public static void main(String[] a) throws Exception {
        String topic = a[0];
        long rows = Long.parseLong(a[1]);
        long start = Long.parseLong(a[2]);
        Properties p = new Properties();
        p.put("bootstrap.servers", System.getenv("FERRY_KAFKA_BOOTSTRAP"));
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", "SCRAM-SHA-512");
        p.put("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
            + System.getenv("FERRY_KAFKA_USERNAME") + "\" password=\"" + System.getenv("FERRY_KAFKA_PASSWORD") + "\";");
        p.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        p.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(p)) {
            long deadline = System.currentTimeMillis() + 600_000;
            while (System.currentTimeMillis() < deadline) {
                List<TopicPartition> parts = new ArrayList<>();
                try {
                    for (PartitionInfo i : c.partitionsFor(topic)) parts.add(new TopicPartition(topic, i.partition()));
                } catch (Exception e) { Thread.sleep(20); continue; }
                long sum = 0;
                for (long o : c.endOffsets(parts).values()) sum += o;
                if (sum >= rows) {
                    System.out.printf("%.2f%n", (System.currentTimeMillis() - start) / 1000.0);
                    return;
                }
                Thread.sleep(20);
            }
            System.out.println("timeout");
            System.exit(1);
        }
    }
}
