"""Consumer lag arithmetic of ``citysense status``."""

from __future__ import annotations

from aiokafka import TopicPartition

from citysense.status._lag import group_lag

ENDS = {
    TopicPartition("a", 0): 100,
    TopicPartition("a", 1): 50,
    TopicPartition("b", 0): 7,
}


def test_lag_sums_the_group_topics_only() -> None:
    positions = {TopicPartition("a", 0): 90, TopicPartition("a", 1): 50}
    lag = group_lag("sink", "g", ["a"], ENDS, positions)
    assert lag.records == 10
    assert lag.partitions == 2
    assert lag.topics == ("a",)


def test_never_committed_partition_counts_from_zero() -> None:
    lag = group_lag("sink", "g", ["a", "b"], ENDS, {TopicPartition("a", 0): 100})
    assert lag.records == 50 + 7


def test_position_beyond_end_is_no_lag_and_unknown_positions_unknown_lag() -> None:
    # The embedded broker restarted empty while the database kept its offsets.
    assert group_lag("sink", "g", ["b"], ENDS, {TopicPartition("b", 0): 900}).records == 0
    assert group_lag("sink", "g", ["b"], ENDS, None).records is None
