"""Which rows of a logical batch a tensor holds, so random draws do not depend on how it is split."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchRows:
    """Rows ``[start, stop)`` of a logical batch of ``total`` samples.

    Data-parallel processes and accumulation micro-steps each hold a slice of the global batch.
    Code that draws per-sample random numbers draws them for all ``total`` rows and keeps its
    slice, so the samples see the same randomness however the batch is split (the 1-process and
    N-process runs then agree).
    """

    start: int
    stop: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop <= self.total:
            raise ValueError(f"BatchRows needs 0 <= start <= stop <= total, got {self}")

    @classmethod
    def whole(cls, n: int) -> BatchRows:
        return cls(0, n, n)

    def __len__(self) -> int:
        return self.stop - self.start

    def every(self, k: int) -> tuple[int, BatchRows]:
        """Keep the global rows ``0, k, 2k, ...`` (``x[::k]`` of the whole batch).

        Returns the first local index to keep (slice the local tensor ``[first::k]``) and the kept
        rows as rows of the sub-sampled logical batch.
        """
        def ceil_div(a: int) -> int:
            return -(-a // k)

        return (-self.start) % k, BatchRows(ceil_div(self.start), ceil_div(self.stop), ceil_div(self.total))

    def split(self, parts: int) -> list[BatchRows]:
        """``parts`` equal consecutive slices (the length must divide evenly)."""
        if len(self) % parts:
            raise ValueError(f"cannot split {len(self)} rows into {parts} equal parts")
        size = len(self) // parts
        return [BatchRows(self.start + i * size, self.start + (i + 1) * size, self.total) for i in range(parts)]
