"""The embedded broker's CPU per produce + fetch as a partition fills with small batches.

    python -m benchmarks.broker_batches                    # 8 rounds of 300 one-record requests
    python -m benchmarks.broker_batches --records-per-batch 20

One producer sends a 1 KB record and waits for its delivery, one consumer waiting at the end of
the partition (10 ms fetch wait, as the embedded profile) reads it; 300 such round trips per
round, on one topic that keeps everything it received. Printed per round: the broker process's
CPU per round trip, and the partition's record batches so far. On a real Kafka cluster a fetch
finds its position from an index; a figure that grows with the batches already stored means the
broker's fetch does work in proportion to them.
"""
from __future__ import annotations

import argparse
import time

from confluent_kafka import Consumer, Producer, TopicPartition


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def main(argv: list[str] | None = None) -> None:
    from dataflow.broker import EmbeddedBroker
    from dataflow.kafka import KafkaSettings, ensure_topics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=300, help="round trips per round")
    parser.add_argument("--records-per-batch", type=int, default=1,
                        help="records sent together per round trip (one batch each)")
    args = parser.parse_args(argv)
    value = b"x" * 1000
    with EmbeddedBroker() as broker:
        pid = broker.pid
        ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap), ["t"], 1)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0,
                             "max.in.flight.requests.per.connection": 1})
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "broker-batches",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition("t", 0, 0)])
        batches = 0
        print("| round | batches stored before | broker CPU ms per round trip | round trips/s |")
        print("|---|---|---|---|")
        for n in range(args.rounds):
            before, started = process_cpu_s(pid), time.monotonic()
            for _ in range(args.per_round):
                for _ in range(args.records_per_batch):
                    producer.produce("t", value)
                producer.flush(10)
                got = 0
                while got < args.records_per_batch:
                    got += consumer.poll(1.0) is not None
            spent, took = process_cpu_s(pid) - before, time.monotonic() - started
            print(f"| {n} | {batches} | {1000 * spent / args.per_round:.2f} | {args.per_round / took:,.0f} |",
                  flush=True)
            batches += args.per_round
        consumer.close()


if __name__ == "__main__":
    main()
