"""Where consumption resumes after a broker restart: the broker-wipe rule, pure."""

from __future__ import annotations

from aiokafka import TopicPartition

from ledger.kafka.offsets import plan_resume, rewound

REQ0, REQ1, DEC0 = (TopicPartition("gov.requests", 0), TopicPartition("gov.requests", 1),
                    TopicPartition("gov.decisions", 0))
PARTS = [REQ0, REQ1, DEC0]


def test_an_intact_broker_resumes_from_the_stored_offsets() -> None:
    plan = plan_resume(PARTS, {("gov.requests", 0): 5}, {REQ0: 9, REQ1: 0, DEC0: 3})
    assert plan.wiped == () and plan.reset == ()
    assert plan.seek == {REQ0: 5, REQ1: 0, DEC0: 0}


def test_a_wiped_topic_starts_again_from_zero_and_others_resume() -> None:
    stored = {("gov.requests", 1): 4, ("gov.decisions", 0): 2}
    plan = plan_resume(PARTS, stored, {REQ0: 0, REQ1: 1, DEC0: 2})
    assert plan.wiped == (REQ1,) and plan.reset == ("gov.requests",)
    assert plan.seek == {REQ0: 0, REQ1: 0, DEC0: 2}


def test_reset_all_forgets_every_topic_once_any_went_backwards() -> None:
    stored = {("gov.requests", 1): 4, ("gov.decisions", 0): 2}
    plan = plan_resume(PARTS, stored, {REQ0: 0, REQ1: 1, DEC0: 2}, reset_all=True)
    assert plan.reset == ("gov.requests", "gov.decisions")
    assert set(plan.seek.values()) == {0}
    assert plan_resume(PARTS, {}, {REQ0: 0, REQ1: 0, DEC0: 0}, reset_all=True).reset == ()


def test_rewound_names_partitions_below_or_missing_in_key_order() -> None:
    expected = {("b", 0): 3, ("a", 1): 2, ("a", 0): 1}
    assert rewound(expected, {("a", 0): 1, ("a", 1): 1}) == [(("a", 1), 1), (("b", 0), None)]
    assert rewound({("a", 0): 0}, {}) == [(("a", 0), None)]


def test_stored_offsets_of_other_topics_are_ignored() -> None:
    plan = plan_resume([REQ0], {("gov.old", 0): 9}, {REQ0: 0})
    assert plan.wiped == () and plan.seek == {REQ0: 0}
