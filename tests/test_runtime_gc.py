"""Process setup tunes the garbage collector for the flow's many short-lived containers."""

import gc

from sentinel.config import load_config_dict
from sentinel.runtime import GC_YOUNG_THRESHOLD, prepare


def test_a_prepared_process_collects_its_young_generation_less_often():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, before[1], before[2])
        cfg = load_config_dict({"source": {"kind": "file", "path": "unused"}, "metrics": {"port": 0}})
        prepare(cfg, 0, None)
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
