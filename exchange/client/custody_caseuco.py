"""A chain-of-custody record as a CASE 1.x / UCO 1.x JSON-LD document (one job: the mapping).

Courts and forensic tools exchange custody as CASE (the Cyber-investigation
Analysis Standard Expression, https://caseontology.org), built on UCO. The
mapping of an ``exchange-custody`` record (see ``exchange.client.custody``):

* the **plaintext file** is a ``uco-observable:File`` with a ``FileFacet``
  (name, size) and a ``ContentDataFacet`` (size, media type, and a
  ``uco-types:Hash`` SHA256 of the plaintext, from the signed manifest);
* the **ciphertext** (the age file the server stores) is a
  ``uco-observable:ContentData`` with a ``ContentDataFacet`` marked encrypted,
  its size and SHA256;
* the **upload** (the ``evidence.commit`` entry) is a
  ``case-investigation:InvestigativeAction`` performed by the uploader
  (a ``uco-identity:Identity`` named by participant id, with its key
  fingerprint), with the ``exchange`` client as instrument, the file as
  object, and as results the ciphertext, a ``case-investigation:
  ProvenanceRecord`` and the commit's audit receipt;
* the **download** (this client's ``evidence.download`` entry) is a second
  InvestigativeAction, informed by the upload, performed by the puller, with
  the ciphertext as object and as results the received file, a
  ProvenanceRecord and the download's audit receipt;
* each **audit receipt** (C2SP tlog-proof: the entry, its inclusion proof and
  the signed checkpoint) is a ``ContentData`` object whose payload is the
  receipt text, so it travels with the document as supporting evidence and
  can be checked offline against the log key named in its description;
* a **handling code** becomes a ``uco-marking:MarkingDefinition`` with a
  ``StatementMarking`` on the file.

Identifiers are ``urn:uuid:`` IRIs derived (UUID v5) from the evidence id
and the part's role, so exporting the same record twice gives the same
document. The export transforms what the record says; ``exchange custody
verify`` is what checks it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["CASE_CONTEXT", "export_case_uco"]

#: JSON-LD context: the CASE 1.x / UCO 1.x namespaces the document uses.
CASE_CONTEXT = {
    "kb": "urn:uuid:",
    "case-investigation": "https://ontology.caseontology.org/case/investigation/",
    "uco-action": "https://ontology.unifiedcyberontology.org/uco/action/",
    "uco-core": "https://ontology.unifiedcyberontology.org/uco/core/",
    "uco-identity": "https://ontology.unifiedcyberontology.org/uco/identity/",
    "uco-marking": "https://ontology.unifiedcyberontology.org/uco/marking/",
    "uco-observable": "https://ontology.unifiedcyberontology.org/uco/observable/",
    "uco-tool": "https://ontology.unifiedcyberontology.org/uco/tool/",
    "uco-types": "https://ontology.unifiedcyberontology.org/uco/types/",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}
#: Namespace of the UUID v5 identifiers (a fixed random UUID: ours alone).
_NAMESPACE = uuid.UUID("9c6f2f0e-5b9e-4f53-9d0a-3c1b7d1e6a42")


def _id(evidence_id: str, part: str) -> str:
    return f"kb:{uuid.uuid5(_NAMESPACE, f'{evidence_id}/{part}')}"


def _ref(node: Mapping[str, Any]) -> dict[str, str]:
    return {"@id": str(node["@id"])}


def _time(text: object) -> dict[str, str]:
    """Return an RFC 3339 UTC time as an ``xsd:dateTime`` literal."""
    return {"@type": "xsd:dateTime", "@value": str(text)}


def _integer(value: object) -> dict[str, Any]:
    return {"@type": "xsd:integer", "@value": int(str(value))}


def _sha256(node_id: str, hex_digest: object) -> dict[str, Any]:
    return {"@id": node_id, "@type": "uco-types:Hash", "uco-types:hashMethod": "SHA256",
            "uco-types:hashValue": {"@type": "xsd:hexBinary", "@value": str(hex_digest)}}


def export_case_uco(record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the CASE JSON-LD document of a custody record (see the module notes).

    ``record`` is a custody record as :func:`~exchange.client.custody.read_record`
    returns it; raises ``KeyError``/``ValueError`` when a part the mapping
    needs is missing or malformed.
    """
    evidence_id = str(record["evidence_id"])
    manifest = record["manifest"]
    hashes, sizes = record["hashes"], record["sizes"]
    graph: list[dict[str, Any]] = []

    def node(part: str, kind: str, **fields: Any) -> dict[str, Any]:
        item = {"@id": _id(evidence_id, part), "@type": kind, **fields}
        graph.append(item)
        return item

    tool = node("tool", "uco-tool:Tool", **{
        "uco-core:name": "exchange", "uco-tool:toolType": "evidence exchange client",
        "uco-core:description": f"server {record.get('server', '')}"})
    uploader_info = record.get("uploader") or {}
    uploader = node(f"identity/{manifest['uploader']}", "uco-identity:Identity", **{
        "uco-core:name": str(manifest["uploader"]),
        "uco-core:description": f"key fingerprint {uploader_info.get('fingerprint', '')}"})
    puller = uploader if record["pulled_by"] == manifest["uploader"] else node(
        f"identity/{record['pulled_by']}", "uco-identity:Identity",
        **{"uco-core:name": str(record["pulled_by"])})

    plain_hash = _sha256(_id(evidence_id, "hash/plaintext"), hashes["plaintext_sha256"])
    cipher_hash = _sha256(_id(evidence_id, "hash/ciphertext"), hashes["ciphertext_sha256"])
    graph += [plain_hash, cipher_hash]
    file_facet = node("facet/file", "uco-observable:FileFacet", **{
        "uco-observable:fileName": str(manifest["file_name"]),
        "uco-observable:sizeInBytes": _integer(sizes["plaintext"])})
    if manifest.get("folder"):
        file_facet["uco-observable:filePath"] = f"{manifest['folder']}/{manifest['file_name']}"
    plain_facet = node("facet/plaintext", "uco-observable:ContentDataFacet", **{
        "uco-observable:sizeInBytes": _integer(sizes["plaintext"]),
        "uco-observable:mimeType": str(manifest["media_type"]),
        "uco-observable:hash": [_ref(plain_hash)]})
    evidence_file = node("file", "uco-observable:File", **{
        "uco-core:name": str(manifest["file_name"]),
        "uco-core:description": f"evidence {evidence_id} of case {record['case_id']}",
        "uco-core:hasFacet": [_ref(file_facet), _ref(plain_facet)]})
    handling = record.get("handling") or {}
    if handling.get("code") or handling.get("note"):
        statement = node("marking/statement", "uco-marking:StatementMarking", **{
            "uco-marking:definitionType": "statement",
            "uco-marking:statement": " ".join(
                p for p in (f"handling code {handling.get('code')}" if handling.get("code")
                            else "", str(handling.get("note") or "")) if p)})
        marking = node("marking", "uco-marking:MarkingDefinition", **{
            "uco-marking:definitionType": "statement",
            "uco-marking:definition": [_ref(statement)]})
        evidence_file["uco-core:objectMarking"] = [_ref(marking)]
    cipher_facet = node("facet/ciphertext", "uco-observable:ContentDataFacet", **{
        "uco-observable:isEncrypted": True,
        "uco-observable:sizeInBytes": _integer(sizes["ciphertext"]),
        "uco-observable:mimeType": "application/age",
        "uco-observable:hash": [_ref(cipher_hash)]})
    ciphertext = node("ciphertext", "uco-observable:ContentData", **{
        "uco-core:name": f"{manifest['file_name']}.age",
        "uco-core:description": "the file encrypted (age v1) to the case key, as the server "
                                "stores it",
        "uco-core:hasFacet": [_ref(cipher_facet)]})

    def receipt(part: str) -> dict[str, Any] | None:
        slot = record.get(part)
        if not isinstance(slot, Mapping) or not isinstance(slot.get("receipt"), str):
            return None
        facet = node(f"facet/receipt/{part}", "uco-observable:ContentDataFacet", **{
            "uco-observable:dataPayload": slot["receipt"],
            "uco-observable:mimeType": "text/plain"})
        return node(f"receipt/{part}", "uco-observable:ContentData", **{
            "uco-core:name": f"audit receipt of entry {slot.get('audit_index')}",
            "uco-core:description": "C2SP tlog-proof receipt (entry, inclusion proof, signed "
                                    f"checkpoint); log key {record.get('log_key', '')}",
            "uco-core:hasFacet": [_ref(facet)]})

    def action(part: str, name: str, *, performer: dict[str, Any], obj: dict[str, Any],
               result: dict[str, Any], end: object, **extra: Any) -> dict[str, Any]:
        provenance = node(f"provenance/{part}", "case-investigation:ProvenanceRecord", **{
            "case-investigation:exhibitNumber": evidence_id,
            "uco-core:description": f"{name} of evidence {evidence_id}",
            "uco-core:object": [_ref(result)]})
        results = [_ref(result), _ref(provenance)]
        proof = receipt(part)
        if proof is not None:
            results.append(_ref(proof))
        return node(f"action/{part}", "case-investigation:InvestigativeAction", **{
            "uco-core:name": name, "uco-action:performer": _ref(performer),
            "uco-action:instrument": [_ref(tool)], "uco-action:object": [_ref(obj)],
            "uco-action:result": results, "uco-action:endTime": _time(end), **extra})

    upload = action("upload", "upload (encrypt, sign, commit)", performer=uploader,
                    obj=evidence_file, result=ciphertext, end=manifest["uploaded_at"])
    action("download", "download (verify, decrypt)", performer=puller, obj=ciphertext,
           result=evidence_file, end=record["pulled_at"],
           **{"case-investigation:wasInformedBy": [_ref(upload)]})
    return {"@context": CASE_CONTEXT, "@graph": graph}
