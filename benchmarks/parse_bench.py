"""The parse edge: hand-checked fast path versus an equivalent pydantic model.

    python benchmarks/parse_bench.py [N]

Both paths decode the same simulated lines and build the same validated
``LLMEvent``: the hand-checked one with orjson and explicit checks, the other
with a pydantic model of the SPEC section 1 fields (types and bounds,
``model_validate_json``) and then the event (timestamp parsed the same way).
Then the flow's parse step (:class:`operators.parse.BatchParser`) on batches of
the same lines, with the event-id check off and on.
"""

from __future__ import annotations

import sys
import time
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from operators.parse import BatchParser
from sentinel.events import LLMEvent, RawBatch, RawRecord
from sentinel.parse import parse_json_record, parse_timestamp
from simulator import Simulator


class PydanticEvent(BaseModel):
    model_config = ConfigDict(extra="allow")
    timestamp: Union[float, str]
    service: str = Field(min_length=1)
    model: str = Field(min_length=1)
    event_type: Literal["llm.request"] = "llm.request"
    provider: Optional[str] = None
    operation: Optional[str] = None
    latency_ms: Optional[float] = Field(default=None, ge=0)
    ttft_ms: Optional[float] = Field(default=None, ge=0)
    input_tokens: Optional[int] = Field(default=None, ge=0)
    output_tokens: Optional[int] = Field(default=None, ge=0)
    cost_usd: Optional[float] = Field(default=None, ge=0)
    status: Literal["ok", "error"] = "ok"
    error_type: Optional[str] = None
    user_id: Optional[str] = None
    tenant_id: Optional[str] = None
    source_ip: Optional[str] = None
    event_id: Optional[str] = None
    region: Optional[str] = None


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    lines = []
    for line in Simulator(seed=1, hours=2, rate=18.5, incidents=[]).iter_lines():
        if b'"security"' not in line:
            lines.append(line.rstrip(b"\n"))
        if len(lines) >= n:
            break
    t0 = time.perf_counter()
    for line in lines:
        parse_json_record(line)
    fast = time.perf_counter() - t0
    validate = PydanticEvent.model_validate_json

    def via_pydantic(line: bytes) -> LLMEvent:
        m = validate(line)
        return LLMEvent(parse_timestamp(m.timestamp), m.service, m.model, m.provider, m.operation, m.latency_ms,
                        m.ttft_ms, m.input_tokens, m.output_tokens, m.cost_usd, m.status == "error", m.error_type,
                        m.user_id, m.tenant_id, m.source_ip, m.event_id, m.region)

    t0 = time.perf_counter()
    for line in lines:
        via_pydantic(line)
    pyd = time.perf_counter() - t0
    print(f"{len(lines)} events: hand-checked {len(lines) / fast:,.0f}/s ({fast / len(lines) * 1e6:.2f} us), "
          f"pydantic model + event {len(lines) / pyd:,.0f}/s ({pyd / len(lines) * 1e6:.2f} us)")

    # The parse step of the flow (grouping by key, actor, source), with and
    # without the event-id check, alternately on the same batches of 500.
    batches = [RawBatch("p0", [RawRecord(line, ("p0", 0, i + j)) for j, line in enumerate(lines[i:i + 500])], 0.0, 1)
               for i in range(0, len(lines), 500)]
    ids_on = 200_000
    best = {0: 0.0, ids_on: 0.0}
    for _ in range(3):
        for ids in best:
            parser = BatchParser(dedup_ids=ids)
            t0 = time.perf_counter()
            for b in batches:
                parser(b)
            best[ids] = max(best[ids], len(lines) / (time.perf_counter() - t0))
    off, on = best[0], best[ids_on]
    print(f"parse step (best of 3): event-id check off {off:,.0f}/s, on (state.dedup_ids {ids_on}) "
          f"{on:,.0f}/s: {(1 / on - 1 / off) * 1e6:.2f} us per event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
