"""Claim, then check: which claimed names the DNS bot keeps, from the registry's and Route53's answers (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.dns.decisions import (
    Conflict,
    OwnedRecord,
    Record,
    after_write,
    settle_claims,
    to_claim,
)

ZONE = "Z1"
WEB = "i-web"
DB = "i-db"


def owned(name: str, kind: str = "A", value: str = "10.0.0.1", owner: str = WEB) -> OwnedRecord:
    return OwnedRecord(Record(ZONE, name, kind, value, 60), owner)  # type: ignore[arg-type]


A_WEB = owned("web.example.com.")
CNAME_WWW = owned("www.example.com.", "CNAME", "web.example.com.")
PTR_WEB = owned("1.0.0.10.in-addr.arpa.", "PTR", "web.example.com.")
CNAME_ELSEWHERE = owned("api.example.com.", "CNAME", "db.example.com.")


class Route53:
    """Route53's answer per name, and every name it was asked about."""

    def __init__(self, taken: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.taken = taken
        self.asked: list[str] = []

    def hold(self, record: Record) -> bool:
        self.asked.append(record.name)
        return record.name in self.taken


def test_a_claim_pointing_at_a_name_its_owner_will_not_hold_is_not_even_asked() -> None:
    asked, elsewhere = to_claim([A_WEB, CNAME_WWW, CNAME_ELSEWHERE], held=set())

    assert asked == (A_WEB, CNAME_WWW)
    assert elsewhere == (CNAME_ELSEWHERE,)


def test_free_names_are_granted_and_route53_is_asked_about_each_after_its_claim() -> None:
    route53 = Route53()

    verdict = settle_claims([CNAME_WWW, A_WEB, PTR_WEB], {}, set(), route53)

    assert verdict.granted == (A_WEB, CNAME_WWW, PTR_WEB)  # the primary first: the others point at it
    assert route53.asked == ["web.example.com.", "www.example.com.", "1.0.0.10.in-addr.arpa."]
    assert verdict.held == {(WEB, entry.record.name) for entry in (A_WEB, CNAME_WWW, PTR_WEB)}
    assert (verdict.given_back, verdict.conflicts, verdict.skipped) == ((), (), ())


def test_a_name_the_registry_refused_is_a_conflict_and_route53_is_not_asked() -> None:
    route53 = Route53()

    verdict = settle_claims([A_WEB], {A_WEB.record.key: DB}, set(), route53)

    assert verdict.conflicts == (Conflict(A_WEB.record, WEB, DB),)
    assert verdict.granted == verdict.given_back == ()
    assert route53.asked == []


def test_a_name_route53_already_holds_is_given_back_and_its_alias_too() -> None:
    # Given web.example.com. in Route53, written by someone else
    verdict = settle_claims([A_WEB, CNAME_WWW], {}, set(), Route53({"web.example.com."}))

    # Then the A is a conflict; the CNAME, pointing at a name the instance did not get, is given back unwritten
    assert verdict.conflicts == (Conflict(A_WEB.record, WEB, "a record opsbots did not write"),)
    assert verdict.given_back == (A_WEB, CNAME_WWW)
    assert verdict.skipped == (CNAME_WWW,)
    assert verdict.granted == ()


def test_an_alias_of_a_name_already_held_is_granted() -> None:
    verdict = settle_claims([CNAME_WWW], {}, {(WEB, "web.example.com.")}, Route53())

    assert verdict.granted == (CNAME_WWW,)


def test_after_route53_refuses_a_write_the_registry_gives_back_what_is_not_ours() -> None:
    current, wanted = owned("db.example.com.", owner=DB), owned("db.example.com.", value="10.0.0.9", owner=DB)
    gone = owned("old.example.com.")
    refused = {A_WEB.record.key: "InvalidChangeBatch", wanted.record.key: "InvalidChangeBatch"}

    settlement = after_write(refused, [A_WEB, CNAME_WWW], [(current, wanted)], [gone])

    assert settlement.withdraw == (A_WEB,)  # a refused claim is not ours to keep
    assert settlement.restore == ((current, DB),)  # a refused update keeps what Route53 still holds
    assert settlement.release == (gone,)
    assert [entry for entry, _ in settlement.refused] == [A_WEB, wanted]
    assert (settlement.added, settlement.updated, settlement.removed) == (1, 0, 1)


NAMES = st.sampled_from(["a.example.com.", "b.example.com.", "c.example.com."])
CLAIMS = st.lists(
    st.builds(
        owned,
        name=NAMES,
        kind=st.sampled_from(["A", "CNAME"]),
        value=NAMES,
        owner=st.sampled_from([WEB, DB]),
    ),
    max_size=8,
    unique_by=lambda entry: entry.record.key,
)


@given(claims=CLAIMS, refused=st.sets(NAMES), taken=st.sets(NAMES))
def test_every_claim_asked_ends_granted_given_back_or_refused_and_route53_sees_only_granted_ones(
    claims: list[OwnedRecord], refused: set[str], taken: set[str]
) -> None:
    asked, _ = to_claim(claims, set())
    route53 = Route53(taken)
    answers = {entry.record.key: DB for entry in asked if entry.record.name in refused}

    verdict = settle_claims(asked, answers, set(), route53)

    refused_entries = [entry for entry in asked if entry.record.key in answers]
    assert sorted([*verdict.granted, *verdict.given_back, *refused_entries]) == sorted(asked)
    assert set(verdict.granted).isdisjoint(verdict.given_back)
    assert set(route53.asked) <= {entry.record.name for entry in asked if entry.record.key not in answers}
    assert all(entry.record.name not in taken for entry in verdict.granted)
