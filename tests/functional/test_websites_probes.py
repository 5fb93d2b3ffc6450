"""The website checks' requests against real HTTP and HTTPS servers on 127.0.0.1: answers, failures, the
leaf certificate from the handshake, redirects, and targets refused before any packet is sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from chalicelib.websites.executors import HttpProber, Request
from demo.web import SITE, http_site, https_site

LOCAL = {SITE: ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}


def resolver(host: str, port: int) -> list[str]:
    return LOCAL.get(host, [host])


PROBER = HttpProber(resolver)


def test_a_healthy_site_a_failing_one_and_a_closed_port() -> None:
    with http_site() as (port, _):
        probes = PROBER.probe_all(
            [
                Request("healthy", f"http://{SITE}:{port}/health", allow_private=True),
                Request("failing", f"http://{SITE}:{port}/fail", allow_private=True),
                Request("wrong", f"http://{SITE}:{port}/wrong", allow_private=True),
            ]
        )
    closed = PROBER.probe(Request("closed", f"http://{SITE}:{port}/health", allow_private=True, timeout=2))

    assert (probes["healthy"].status, probes["healthy"].body) == (200, b"ok")
    assert (probes["failing"].status, probes["wrong"].body) == (500, b"maintenance")
    assert closed.error == "connection refused"


def test_a_private_target_is_refused_before_any_packet_unless_the_check_allows_it() -> None:
    with http_site() as (port, traffic):
        refused = PROBER.probe(Request("private", f"http://{SITE}:{port}/health"))
        by_address = PROBER.probe(Request("literal", f"http://127.0.0.1:{port}/health"))
        allowed = PROBER.probe(Request("allowed", f"http://{SITE}:{port}/health", allow_private=True))

    assert refused.error == "127.0.0.1 is a private address: refused unless the check says allow_private: true"
    assert by_address.error == refused.error
    assert allowed.status == 200
    assert traffic.requests == ["/health"]  # the allowed check's only: the refused ones sent nothing


def test_every_redirect_hop_is_judged_and_the_metadata_address_is_never_reached() -> None:
    with http_site() as (port, traffic):
        followed = PROBER.probe(Request("redirect", f"http://{SITE}:{port}/redirect", allow_private=True))
        to_metadata = PROBER.probe(
            Request("meta", f"http://{SITE}:{port}/to/http://metadata.test/latest/meta-data/", allow_private=True)
        )

    assert (followed.status, followed.body) == (200, b"ok")
    assert to_metadata.error == "169.254.169.254 is the instance-metadata address: never checked"
    assert traffic.requests == ["/redirect", "/health", "/to/http://metadata.test/latest/meta-data/"]


def test_too_many_redirects_is_a_failed_run() -> None:
    with http_site() as (port, _):
        hop = f"http://{SITE}:{port}/to/"
        probe = PROBER.probe(Request("loop", hop * 7 + f"http://{SITE}:{port}/health", allow_private=True))

    assert probe.error == "more than 5 redirects"


def test_the_leaf_certificate_comes_from_the_handshake_and_a_private_ca_is_trusted_only_when_given(
    tmp_path: Path,
) -> None:
    with https_site(tmp_path, leaf_days=5) as (port, _, ca):
        trusted = PROBER.probe(Request("tls", f"https://{SITE}:{port}/health", allow_private=True, ca_file=str(ca)))
        untrusted = PROBER.probe(Request("tls-system", f"https://{SITE}:{port}/health", allow_private=True))

    assert trusted.status == 200
    assert trusted.certificate is not None
    assert trusted.certificate.subject == f"CN={SITE}"
    assert timedelta(days=4) < trusted.certificate.expires - datetime.now(UTC) <= timedelta(days=5)
    assert untrusted.error is not None
    assert untrusted.error.startswith("TLS: ")


def test_a_run_sends_every_check_at_once() -> None:
    # Given forty checks of a page that answers only once forty requests are in flight together
    with http_site() as (port, traffic):
        probes = PROBER.probe_all(
            [Request(f"check-{n}", f"http://{SITE}:{port}/together/40", allow_private=True) for n in range(40)]
        )

    # Then all forty were in flight at once: a run lasts about its slowest check, not their sum
    assert traffic.most_in_flight == 40
    assert {probe.status for probe in probes.values()} == {200}


def test_a_ca_bundle_that_cannot_be_read_fails_its_check_only(tmp_path: Path) -> None:
    missing = tmp_path / "no.pem"
    with https_site(tmp_path, leaf_days=90) as (port, _, ca):
        probes = PROBER.probe_all(
            [
                Request("missing", f"https://{SITE}:{port}/health", allow_private=True, ca_file=str(missing)),
                Request("trusted", f"https://{SITE}:{port}/health", allow_private=True, ca_file=str(ca)),
            ]
        )

    assert probes["missing"].error == f"ca_bundle {missing} cannot be read"
    assert probes["trusted"].status == 200
