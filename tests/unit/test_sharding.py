"""Golden tests for the crc32 sharding rule: the compatibility contract with the Ruby gem."""

from __future__ import annotations

import zlib

import pytest

from reference.sharding import shard_for, worker_for

# name -> worker for total_workers 1, 2, 3, 5. Literals on purpose: computed once from
# crc32(name) % total + 1 and pinned; Ruby's Zlib.crc32 is the same standard checksum.
GOLDEN: dict[str, tuple[int, int, int, int]] = {
    "sync_products": (1, 1, 2, 5),
    "daily_report": (1, 1, 2, 1),
    "cleanup": (1, 2, 1, 4),
    "send_digest": (1, 1, 3, 4),
    "a": (1, 2, 1, 3),
    "": (1, 1, 1, 1),
    "élan": (1, 1, 1, 4),
    "heartbeat": (1, 2, 2, 5),
    "billing.invoice": (1, 2, 2, 3),
    "Report-2": (1, 2, 3, 2),
}
TOTALS = (1, 2, 3, 5)


def test_crc32_is_the_standard_checksum() -> None:
    # The published check value of CRC-32/ISO-HDLC, which Ruby's Zlib.crc32 also returns.
    assert zlib.crc32(b"123456789") == 0xCBF43926


@pytest.mark.parametrize(("name", "expected"), GOLDEN.items())
def test_shard_for_golden_table(name: str, expected: tuple[int, int, int, int]) -> None:
    assert tuple(shard_for(name, total) for total in TOTALS) == expected


def test_shard_for_hashes_utf8_bytes() -> None:
    assert shard_for("élan", 5) == zlib.crc32("élan".encode()) % 5 + 1


@pytest.mark.parametrize("total", [0, -1, True, 2.0])
def test_shard_for_rejects_bad_totals(total: object) -> None:
    with pytest.raises(ValueError, match="total_workers"):
        shard_for("x", total)  # type: ignore[arg-type]


def test_worker_for_without_pin_uses_the_shard() -> None:
    assert worker_for("sync_products", 5, None) == 5


def test_worker_for_pin_wins() -> None:
    assert worker_for("sync_products", 5, 2) == 2


@pytest.mark.parametrize("pin", [0, 6, -1, True])
def test_worker_for_rejects_out_of_range_pins(pin: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.5"):
        worker_for("sync_products", 5, pin)
