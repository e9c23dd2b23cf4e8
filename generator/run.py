"""Drives a run: windows of traffic, delivered in receipt order, counted into the truth, sent to a sink."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from generator.block import EventBlock
from generator.canonical import materialise
from generator.config import DAY_US, SECOND_US, GeneratorConfig
from generator.population import Population, build_population
from generator.sinks import Sink
from generator.traffic import Traffic
from generator.truth import Truth

WINDOW_RECORDS = 50_000  # backfill window size in expected records: bounds memory, keeps numpy efficient
LIVE_STEP_US = 200_000  # live: generate and send every 0.2 s


class ReceiveOrder:
    """Holds generated records until nothing received earlier can still be generated, then releases them sorted."""

    def __init__(self) -> None:
        self.pending = EventBlock.empty()

    def push(self, block: EventBlock) -> None:
        self.pending = EventBlock.concat([self.pending, block])

    def pop_before(self, t: int) -> EventBlock:
        """Records received before t, in receipt order (ties keep generation order)."""
        order = np.argsort(self.pending.received_at, kind="stable")
        cut = int(np.searchsorted(self.pending.received_at[order], t, side="left"))
        out, self.pending = self.pending.take(order[:cut]), self.pending.take(order[cut:])
        return out


@dataclass
class RunResult:
    config: GeneratorConfig
    truth: Truth
    statuses: dict[str, int]
    records: int
    seconds: float
    interrupted: bool = False

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


class _Emitter:
    def __init__(self, truth: Truth, pop: Population, sink: Sink) -> None:
        self.truth, self.pop, self.sink = truth, pop, sink
        self.records = 0

    def __call__(self, block: EventBlock) -> None:
        if not len(block):
            return
        self.truth.add(block)
        events, invalid = materialise(block, self.pop)
        self.sink.send(events, invalid)
        self.records += len(block)


def _progress(enabled: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=False)


def run(config: GeneratorConfig, sink: Sink, progress: bool = False) -> RunResult:
    """Generate the whole run into `sink`; the sink is closed before returning."""
    config.check()
    rng = np.random.default_rng(config.seed)
    pop = build_population(config, rng)
    if config.live:
        config = replace(config, start_us=time.time_ns() // 1000)
    traffic = Traffic(config, pop, rng)
    truth = Truth(config, pop)
    emit = _Emitter(truth, pop, sink)
    began = time.perf_counter()
    interrupted = False
    try:
        with _progress(progress) as bar:
            if config.live:
                _live(config, traffic, emit, bar)
            else:
                _backfill(config, traffic, emit, bar)
    except KeyboardInterrupt:
        # Ctrl-C ends a run early; the truth still describes exactly what was sent.
        interrupted = True
    finally:
        statuses = sink.close()
    return RunResult(config, truth, statuses, emit.records, time.perf_counter() - began, interrupted)


def _backfill(config: GeneratorConfig, traffic: Traffic, emit: _Emitter, bar: Progress) -> None:
    """Day after day as fast as possible; windows are whole fractions of a day so the curve is honoured."""
    task = bar.add_task("backfill", total=config.days * config.events_per_day)
    per_day = max(1, math.ceil(config.events_per_day / WINDOW_RECORDS))
    order = ReceiveOrder()
    for day in range(config.days):
        day_start = config.start_us + day * DAY_US
        for k in range(per_day):
            w0, w1 = day_start + k * DAY_US // per_day, day_start + (k + 1) * DAY_US // per_day
            order.push(traffic.window(w0, w1, diurnal=True))
            block = order.pop_before(w1)
            emit(block)
            bar.advance(task, len(block))
    # Sessions running past the last midnight, and resends, are delivered too.
    block = order.pop_before(np.iinfo(np.int64).max)
    emit(block)
    bar.update(task, completed=emit.records)


def _live(config: GeneratorConfig, traffic: Traffic, emit: _Emitter, bar: Progress) -> None:
    """Real time: each step's records are sent once the wall clock has passed their receipt time."""
    task = bar.add_task("live", total=config.duration)
    start = config.start_us
    end = start + int(config.duration * SECOND_US)
    order = ReceiveOrder()
    order.push(traffic.in_progress(start))
    w0 = start
    while w0 < end:
        w1 = min(w0 + LIVE_STEP_US, end)
        order.push(traffic.window(w0, w1, diurnal=False))
        wait = (w1 - time.time_ns() // 1000) / SECOND_US
        if wait > 0:
            time.sleep(wait)
        emit(order.pop_before(w1))
        bar.update(task, completed=(w1 - start) / SECOND_US)
        w0 = w1
    # Records due after the end (the rest of open sessions, pending resends) are never sent nor counted.
