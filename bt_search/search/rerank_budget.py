"""How much of a shortlist to rerank: a device-dependent default N, a time estimate, and `--rerank-budget`.

Rerank cost is per candidate (its vision tower, then one fusion pass per query that shortlists it), and on
a CPU it is large: about 3.2 s per candidate for the default model's shapes in fp32, 1.4 s with a bf16
rerank (docs/performance.md, "CPU experience"). So the first candidate of a call is reranked alone (it pays
the warm-up), then a few more are timed; from then on the clock knows the steady cost per candidate, says what
the whole rerank will take when that is long, and, given a budget, hands out only the candidates that still
fit. Candidates come in cosine order, so the ones reranked are the best that fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

CPU_SHORTLIST = 20  # see docs/performance.md, "CPU experience"
GPU_SHORTLIST = 50  # BridgeTower's own protocol reranks the ITC top-k; 50 keeps close to it on CUDA
ESTIMATE_ABOVE_SECONDS = 10.0  # a rerank projected to take longer than this is announced on stderr


def default_shortlist(device_type: str) -> int:
    """The shortlist size used when --shortlist is not given."""
    return GPU_SHORTLIST if device_type == "cuda" else CPU_SHORTLIST


class RerankClock:
    """Paces one call's rerank: chunk sizes, an announced estimate, and an optional budget in seconds.

    The first chunk (one candidate) pays the warm-up: the query's text states, first-call allocations, thread
    start-up. On a CPU it measured 4 to 17 times a later candidate's cost, so it is never taken as the rate.
    A second, small chunk (PROBE candidates) is timed on its own; the rate is the time of every chunk after the
    first over the candidates they reranked. The estimate is announced once, after the probe, and only when
    the rest of the rerank is projected to take more than ESTIMATE_ABOVE_SECONDS.

    The budget is shared out over the queries in order (query q may use up to (q+1)/Q of it, so time a query
    leaves unused passes to the next ones); each query reranks at least one candidate. Until a steady rate is
    known the budget is paced by the first chunk's time, which overstates the cost: it cuts early, never late.
    """

    PROBE = 4  # candidates in the second chunk, timed alone: enough to average, few enough to say so early

    def __init__(
        self,
        candidates: int,
        queries: int,
        budget: float | None = None,
        on_note: Callable[[str], None] | None = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            from bt_search.errors import UsageError

            raise UsageError(f"`rerank_budget` must be a number of seconds > 0, not {budget}")
        self.candidates, self.queries, self.budget = candidates, queries, budget
        self.on_note = on_note or (lambda message: None)
        self.now = now
        self.started = now()
        self.done = 0
        self.skipped = 0
        self.announced = False
        self.first: tuple[int, float] | None = None  # (candidates, seconds) of the warm-up chunk
        self.last = self.started  # when the latest chunk ended

    @property
    def seconds_per_candidate(self) -> float | None:
        """The steady cost of one candidate: every chunk after the first, over what they reranked (None until
        one has run)."""
        if self.first is None or self.done <= self.first[0]:
            return None
        return (self.last - self.started - self.first[1]) / (self.done - self.first[0])

    def _pace(self) -> float | None:
        """Seconds per candidate to plan with: the steady rate, else the first chunk's (an overestimate)."""
        per = self.seconds_per_candidate
        if per is None and self.first is not None:
            per = self.first[1] / self.first[0]
        return per

    def chunk_size(self, query: int, reranked_in_query: int, left_in_query: int, batch: int) -> int:
        """How many of this query's next candidates to rerank now (0: stop, the budget is spent)."""
        if self.first is None:
            return min(1, left_in_query)  # the first candidate alone: it pays the warm-up
        size = batch if self.seconds_per_candidate is not None else min(batch, self.PROBE)
        if self.budget is None:
            return min(size, left_in_query)
        per = self._pace()
        allowed = self.budget * (query + 1) / self.queries - (self.now() - self.started)
        fit = int(allowed // per) if per > 0 else left_in_query
        if reranked_in_query == 0:
            fit = max(fit, 1)
        return max(0, min(size, left_in_query, fit))

    def record(self, count: int) -> None:
        self.last = self.now()
        self.done += count
        if self.first is None:
            self.first = (count, self.last - self.started)
            return
        per = self.seconds_per_candidate
        if self.announced or per is None:
            return
        self.announced = True
        left = per * (self.candidates - self.done)
        if left > ESTIMATE_ABOVE_SECONDS:
            total = self.last - self.started + left
            cap = f"; `rerank_budget={self.budget:g}` s caps it" if self.budget else "; `rerank_budget=SECONDS` caps it"
            self.on_note(
                f"reranking {self.candidates} candidates: about {total:.0f} s in all at {_seconds(per)} each{cap}, "
                "`shortlist=N` shrinks it, `rerank=False` skips it"
            )

    def skip(self, count: int) -> None:
        self.skipped += count

    def summary(self) -> str | None:
        if not self.skipped:
            return None
        return (
            f"reranked {self.candidates - self.skipped} of {self.candidates} candidates within "
            f"`rerank_budget={self.budget:g}` s; the {self.skipped} that did not fit were left out"
        )


def _seconds(per: float) -> str:
    """A per-candidate cost in words: tenths of a second, or milliseconds below one."""
    return f"{per:.1f} s" if per >= 1 else f"{per * 1000:.0f} ms"
