"""Dead-letter sinks (SPEC section 1): a JSON-lines file, a Kafka topic or stderr.

With a masker (``privacy:``), each record's detail and raw text are masked
before they are written, unless the original bytes are to be kept
(``privacy.dead_letter_raw: original``).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, List, Union

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from sentinel.config import JsonlDeadLetters, KafkaDeadLetters, StderrDeadLetters
from sentinel.events import DeadLetter
from sentinel.parse import dead_letter_to_dict
from sinks.files import SharedFile

log = logging.getLogger(__name__)


class _DeadLetterPartition(StatelessSinkPartition[List[DeadLetter]]):
    def __init__(self, cfg: Union[JsonlDeadLetters, KafkaDeadLetters, StderrDeadLetters], masker: Any = None,
                 keep_original: bool = False) -> None:
        self._cfg = cfg
        self._masker = None if keep_original else masker
        self._f = None
        self._producer = None
        if isinstance(cfg, JsonlDeadLetters):
            self._f = SharedFile(cfg.path)
        elif isinstance(cfg, KafkaDeadLetters):
            from sinks.kafka import KafkaBytesProducer

            self._producer = KafkaBytesProducer(cfg.brokers, cfg.topic, cfg.config, metrics_sink="dlq")

    def write_batch(self, items: List[List[DeadLetter]]) -> None:
        now = time.time()
        records = [dead_letter_to_dict(d, now) for group in items for d in group]
        if self._masker is not None:
            records = [self._masker.dead_letter(r) for r in records]
        lines = [orjson.dumps(r) for r in records]
        if not lines:
            return
        if self._f is not None:
            self._f.write_lines(lines)
        elif self._producer is not None:
            for line in lines:
                self._producer.send(None, line)
            self._producer.flush()
        else:
            err = sys.stderr.buffer
            err.write(b"".join(b"dead letter: " + line + b"\n" for line in lines))
            err.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        if self._producer is not None:
            self._producer.close()


class DeadLetterSink(DynamicSink[List[DeadLetter]]):
    def __init__(self, cfg: Union[JsonlDeadLetters, KafkaDeadLetters, StderrDeadLetters], masker: Any = None,
                 keep_original: bool = False) -> None:
        self.cfg = cfg
        self.masker = masker
        self.keep_original = keep_original

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        from sentinel import shutdown

        shutdown.mark_started()  # built once the cluster is up: a signal now stops the flow gracefully
        return _DeadLetterPartition(self.cfg, self.masker, self.keep_original)
