"""Shadow-mode agreement (ledger.core.shadow): decisions made by the engine while a shadow
policy is published, tallied per policy id, and the /metrics counter fed from them."""

from __future__ import annotations

from ledger.core.events import AuthorizationDenied, AuthorizationGranted, Event
from ledger.core.shadow import NO_POLICY, ShadowTally, agreement
from ledger.server.metrics import MAX_POLICY_LABELS, Metrics
from tests.unit.test_governance import (
    OPERATOR,
    PERMIT_ALL_READS,
    Gov,
    answers,
    example_files,
    policy,
)


def decided_in_shadow() -> tuple[str, list[Event]]:
    """The engine's decisions on four requests with a shadow policy that also permits every
    read: one disagreement (files/report), three agreements."""
    gov = Gov()
    files = dict(example_files())
    files["extra.cedar"] = PERMIT_ALL_READS
    shadow = policy(files, mode="shadow")
    gov.govern(shadow, OPERATOR)
    decided = [event for resource, actions in (
        ("files/report", ("read",)),        # enforced: default deny; shadow: read-anything
        ("db/orders/1", ("read",)),         # both allow
        ("prod/secrets/x", ("read",)),      # both forbid
        ("files/report", ("write",)),       # both default deny
    ) for event in answers(gov.ask(resource=resource, actions=actions))]
    return shadow.policy_digest, decided


def test_each_decision_with_a_shadow_outcome_counts_under_the_policies_that_decided_it() -> None:
    digest, decided = decided_in_shadow()
    found = [agreement(event) for event in decided]
    assert all(f is not None and f.shadow_digest == digest for f in found)
    assert [(f.agrees, f.policy_ids) for f in found if f is not None] == [
        (False, ("read-anything",)),
        (True, ("db-read", "read-anything")),
        (True, ("forbid-prod-secrets",)),
        (True, (NO_POLICY,)),
    ]
    tally = ShadowTally().add_all(decided)
    assert (tally.totals[digest].agree, tally.totals[digest].disagree) == (3, 1)
    rows = [(policy_id, c.agree, c.disagree) for _, policy_id, c in tally.rows()]
    assert rows[0] == ("read-anything", 1, 1)  # the most disagreements first
    assert sorted(rows[1:]) == [(NO_POLICY, 1, 0), ("db-read", 1, 0),
                                ("forbid-prod-secrets", 1, 0)]
    shadow_policies = tally.summary()["shadow_policies"]
    assert isinstance(shadow_policies, list) and shadow_policies[0]["disagree"] == 1


def test_decisions_without_a_shadow_policy_are_not_counted() -> None:
    gov = Gov()
    decided = answers(gov.ask(resource="db/orders/1")) + answers(gov.ask(resource="files/x"))
    assert [type(e) for e in decided] == [AuthorizationGranted, AuthorizationDenied]
    assert [agreement(e) for e in decided] == [None, None]
    assert ShadowTally().add_all(decided).totals == {}


def test_the_metrics_counter_is_labelled_by_policy_id_and_bounded() -> None:
    _, decided = decided_in_shadow()
    metrics = Metrics()
    for event in decided:
        if (found := agreement(event)) is not None:
            metrics.observe_shadow(found)
    text = metrics.render().decode()
    assert ('govledger_shadow_decisions_total{agreement="disagree",policy_id="read-anything"} '
            '1.0') in text
    assert 'govledger_shadow_decisions_total{agreement="agree",policy_id="db-read"} 1.0' in text
    first = agreement(decided[0])
    assert first is not None
    for n in range(MAX_POLICY_LABELS + 5):  # a flood of distinct ids ends in OTHER
        metrics.observe_shadow(first.__class__(first.shadow_digest, False, (f"p{n}",)))
    text = metrics.render().decode()
    assert 'policy_id="OTHER"' in text
    assert text.count("govledger_shadow_decisions_total{") <= MAX_POLICY_LABELS * 2 + 2
