"""What a run shows while it trains (the main process, without ``--quiet``), with tqdm.

One bar counts epochs, or for a full-batch solver (whose one epoch can be the whole solve) its
iterations, out of ``optim.max_iter`` at most: no time left is shown for those, since a solver
stops when it converges, not when its budget is spent. When the training rows stream from disk,
a second bar follows each pass over them (one epoch of minibatches, one evaluation of the
full-batch objective): rows read, rows per second and the time the pass has left.
"""

from __future__ import annotations

from typing import Any

# A solver's bar: done and budget, elapsed time and rate, no "remaining" (see above).
SOLVER_BAR = "{desc}: {n_fmt}/{total_fmt} iterations at most [{elapsed}, {rate_fmt}{postfix}]"


class RunBars:
    """The bars of one run; ``close`` ends them (idempotent)."""

    def __init__(self, *, epochs: int, start_epoch: int, solver: str | None, max_iter: int,
                 start_iter: int, stream: Any = None, rank: int = 0, world: int = 1) -> None:
        from tqdm import tqdm

        if solver is not None:
            self.main = tqdm(total=max_iter, initial=start_iter, desc=f"train ({solver})",
                             unit="it", bar_format=SOLVER_BAR)
        else:
            self.main = tqdm(total=epochs, initial=start_epoch, desc="train", unit="epoch")
        self.rows = None
        self.passes = 0  # over the streamed rows: one per epoch, or per objective evaluation
        self.stream = stream
        self.rank, self.world = rank, world
        if stream is not None:
            self.rows = tqdm(total=0, desc="pass", unit="row", unit_scale=True, position=1,
                             leave=False)
            stream.on_pass, stream.on_rows = self.start_pass, self.rows_read

    def start_pass(self, chunk_sizes: list[int]) -> None:
        """A pass over the streamed rows begins: this rank reads every world-th chunk."""
        total = sum(n for i, n in enumerate(chunk_sizes) if i % self.world == self.rank)
        self.passes += 1
        self.rows.set_description(f"pass {self.passes}", refresh=False)
        self.rows.reset(total=total)

    def rows_read(self, n: int) -> None:
        self.rows.update(n)
        if self.rows.n >= self.rows.total:  # drawn complete, however fast the pass was
            self.rows.refresh()

    def epoch_done(self, train_loss: float, val_loss: float | None) -> None:
        """An epoch ended (for a solver, only the losses change: it counts iterations)."""
        if self.main.unit == "epoch":
            self.main.update(1)
        self.main.set_postfix(train_loss=f"{train_loss:.4f}",
                              val_loss="-" if val_loss is None else f"{val_loss:.4f}")

    def iteration(self, point: Any) -> None:
        """A solver's iteration (a newton.Iterate, numbered over the whole run)."""
        self.main.update(max(0, point.iteration - self.main.n))
        self.main.set_postfix(objective=f"{point.loss:.6g}", max_grad=f"{point.grad_max:.1e}")

    def close(self) -> None:
        if self.stream is not None:
            self.stream.on_pass = self.stream.on_rows = None
            self.stream = None
        for bar in (self.rows, self.main):
            if bar is not None:
                bar.close()
