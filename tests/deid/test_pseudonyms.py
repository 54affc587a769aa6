"""Keyed pseudonyms, the encrypted mapping and the two-person rule."""

from __future__ import annotations

import pytest

from enclave.deid.pseudonyms import PseudonymStore, ReidentificationPolicy, reidentify
from enclave.errors import IntegrityError, NotFound, PermissionDenied, ValidationError

POLICY = ReidentificationPolicy(
    requesters=frozenset({"dr-lee"}), approvers=frozenset({"officer-kim", "dr-lee"})
)


@pytest.fixture
def store(tmp_path, keyring) -> PseudonymStore:
    return PseudonymStore(tmp_path / "pseudonyms", keyring)


def test_pseudonym_keyed_and_stable(store, tmp_path, keyring):
    first = store.pseudonym("asset-1", namespace="asset")

    assert first == store.pseudonym("asset-1", namespace="asset")
    assert first != store.pseudonym("asset-2", namespace="asset")
    assert first != store.pseudonym("asset-1", namespace="dicom-uid")
    assert (
        PseudonymStore(tmp_path / "pseudonyms", keyring).pseudonym(
            "asset-1", namespace="asset"
        )
        == first
    )
    assert (
        PseudonymStore(tmp_path / "other", keyring).pseudonym(
            "asset-1", namespace="asset"
        )
        != first
    )


def test_mapping_encrypted_at_rest(store):
    pseudonym = store.pseudonym("asset-1", namespace="asset")

    store.record(pseudonym, {"asset_id": "asset-1-secret"})

    blob = (store.root / f"{pseudonym}.bin").read_bytes()
    assert b"asset-1-secret" not in blob
    assert (store.root / f"{pseudonym}.bin").stat().st_mode & 0o077 == 0
    assert store.root.stat().st_mode & 0o077 == 0


def test_reidentify_two_people(store, audit_log):
    pseudonym = store.pseudonym("asset-1", namespace="asset")
    store.record(pseudonym, {"asset_id": "asset-1"})

    entry = reidentify(
        store,
        audit_log,
        pseudonym,
        requester="dr-lee",
        approver="officer-kim",
        reason="incidental finding",
        policy=POLICY,
    )

    assert entry == {"asset_id": "asset-1"}
    event = list(audit_log.events(action="pseudonym.reidentify"))[-1]
    assert event.outcome == "success"
    assert event.actor == "dr-lee"
    assert event.target == pseudonym
    assert "asset-1" not in str(event.detail)


@pytest.mark.parametrize(
    ("requester", "approver", "reason", "message"),
    [
        ("dr-lee", "dr-lee", "finding", "second person"),
        ("officer-kim", "dr-lee", "finding", "does not hold"),
        ("dr-lee", "mallory", "finding", "not a re-identification approver"),
        ("dr-lee", "officer-kim", " ", "reason is required"),
    ],
)
def test_reidentify_denied_and_audited(
    store, audit_log, requester, approver, reason, message
):
    pseudonym = store.pseudonym("asset-1", namespace="asset")
    store.record(pseudonym, {"asset_id": "asset-1"})

    with pytest.raises(PermissionDenied, match=message):
        reidentify(
            store,
            audit_log,
            pseudonym,
            requester=requester,
            approver=approver,
            reason=reason,
            policy=POLICY,
        )

    event = list(audit_log.events(action="pseudonym.reidentify"))[-1]
    assert event.outcome == "denied"
    assert event.actor == requester


def test_reidentify_unknown_pseudonym(store, audit_log):
    with pytest.raises(NotFound):
        reidentify(
            store,
            audit_log,
            "0" * 32,
            requester="dr-lee",
            approver="officer-kim",
            reason="x",
            policy=POLICY,
        )


def test_reidentify_rejects_malformed(store, audit_log):
    with pytest.raises(ValidationError, match="pseudonym"):
        reidentify(
            store,
            audit_log,
            "../keys",
            requester="dr-lee",
            approver="officer-kim",
            reason="x",
            policy=POLICY,
        )


def test_tampered_entry_detected(store, audit_log):
    pseudonym = store.pseudonym("asset-1", namespace="asset")
    store.record(pseudonym, {"asset_id": "asset-1"})
    path = store.root / f"{pseudonym}.bin"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 1
    path.write_bytes(bytes(blob))

    with pytest.raises(IntegrityError):
        reidentify(
            store,
            audit_log,
            pseudonym,
            requester="dr-lee",
            approver="officer-kim",
            reason="x",
            policy=POLICY,
        )


def test_ai_diagnosis_derive_stores_mapping(catalog, vault, audit_log, synthetic_clip):
    from enclave.catalog.models import Asset
    from enclave.deid import derive
    from enclave.ingest import ingest_file

    clip = synthetic_clip("small.mp4", width=320, height=192, frames=6, faces=1)
    source = ingest_file(
        catalog,
        vault,
        audit_log,
        clip.path,
        category="diagnosis",
        level=2,
        actor="steward",
    )

    dataset = derive(
        catalog,
        vault,
        audit_log,
        [source.id],
        profile="ai-diagnosis",
        dataset_name="ai-set",
        actor="steward",
    )

    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.source_id is None
        subject = derivative.deid_report["identifiers"]["subject"]
        assert source.id not in str(derivative.deid_report)
    store = PseudonymStore(vault.root.parent / "pseudonyms", vault.keyring)
    entry = reidentify(
        store,
        audit_log,
        subject,
        requester="dr-lee",
        approver="officer-kim",
        reason="audit",
        policy=POLICY,
    )
    assert entry["asset_id"] == source.id


def test_new_tech_research_keeps_no_link(catalog, vault, audit_log, synthetic_clip):
    from enclave.catalog.models import Asset
    from enclave.deid import derive
    from enclave.ingest import ingest_file

    clip = synthetic_clip("small.mp4", width=320, height=192, frames=6, faces=1)
    source = ingest_file(
        catalog,
        vault,
        audit_log,
        clip.path,
        category="diagnosis",
        level=2,
        actor="steward",
    )

    dataset = derive(
        catalog,
        vault,
        audit_log,
        [source.id],
        profile="new-tech-research",
        dataset_name="open-set",
        actor="steward",
    )

    with catalog.session() as session:
        derivative = session.get(Asset, dataset.items[0].asset_id)
        assert derivative.source_id is None
        assert derivative.deid_report["identifiers"]["mode"] == "random"
        assert source.id not in str(derivative.deid_report)
    assert not (vault.root.parent / "pseudonyms").exists()


def test_ai_diagnosis_dicom_uids_recorded(catalog, vault, audit_log, ultrasound_path):
    from enclave.deid import derive
    from enclave.ingest import ingest_file

    source = ingest_file(
        catalog,
        vault,
        audit_log,
        ultrasound_path,
        category="diagnosis",
        level=2,
        actor="steward",
    )

    derive(
        catalog,
        vault,
        audit_log,
        [source.id],
        profile="ai-diagnosis",
        dataset_name="echo-ai",
        actor="steward",
    )

    entries = sorted((vault.root.parent / "pseudonyms").glob("*.bin"))
    # One entry for the asset and at least one for a replaced DICOM UID.
    assert len(entries) >= 2
