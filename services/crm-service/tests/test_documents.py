"""Documents: streamed uploads with a size limit and allowed types, downloads with the right
headers, deletion, and time-limited share links that need no API key."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from crm.config import CRMSettings
from crm.documents.models import Document
from cxkit.fields import NO_NUL
from cxkit.testing import bearer

from .customer_races import erase, merge, sent_during

PDF = b"%PDF-1.4\n" + b"x" * 5000


def stored_files(settings: CRMSettings) -> list[Path]:
    return [p for p in Path(settings.documents_dir).rglob("*") if p.is_file()]


async def upload(
    client: httpx.AsyncClient,
    data: dict[str, str],
    name: str = "offer.pdf",
    content: bytes = PDF,
    ctype: str = "application/pdf",
    **kw: Any,
) -> httpx.Response:
    return await client.post("/v1/documents", data=data, files={"file": (name, content, ctype)}, **kw)


async def test_upload_then_download_returns_the_same_bytes_with_type_and_name(client: httpx.AsyncClient, make: Any) -> None:
    customer = await make.customer()
    r = await upload(client, {"customer_id": customer["id"], "description": "Signed offer"}, name="Angebot Müller.pdf")
    assert r.status_code == 201, r.text
    doc = r.json()
    assert (doc["filename"], doc["content_type"], doc["size_bytes"]) == ("Angebot Müller.pdf", "application/pdf", len(PDF))
    assert doc["sha256"] == hashlib.sha256(PDF).hexdigest() and doc["uploaded_by"] == "test-admin"
    assert r.headers["location"] == f"/v1/documents/{doc['id']}"
    got = await client.get(doc["download_url"])
    assert got.status_code == 200 and got.content == PDF
    assert got.headers["content-type"] == "application/pdf"
    assert got.headers["content-disposition"] == "attachment; filename*=utf-8''Angebot%20M%C3%BCller.pdf"
    assert got.headers["x-content-type-options"] == "nosniff"
    listed = (await client.get("/v1/documents", params={"customer_id": customer["id"]})).json()["items"]
    assert [d["id"] for d in listed] == [doc["id"]]
    # The OpenAPI document promises what the download sends: a file of its stored type, any of
    # the allowed ones (it said application/octet-stream, and a PDF came back as application/pdf).
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/documents/{document_id}/content", "/v1/shared/documents/{document_id}"):
        assert list(paths[path]["get"]["responses"]["200"]["content"]) == ["*/*"], path


async def test_a_deals_document_belongs_to_the_deals_customer(client: httpx.AsyncClient, make: Any) -> None:
    deal = await make.deal()
    doc = (
        await upload(client, {"deal_id": deal["id"]}, name="../../etc/passwd.txt", content=b"hello", ctype="text/plain")
    ).json()
    assert doc["customer_id"] == deal["customer_id"] and doc["deal_id"] == deal["id"]
    assert doc["filename"] == "passwd.txt"
    assert [d["id"] for d in (await client.get("/v1/documents", params={"deal_id": deal["id"]})).json()["items"]] == [doc["id"]]


async def test_too_large_is_413_and_leaves_no_file(
    client: httpx.AsyncClient, make: Any, crm_settings: CRMSettings, monkeypatch: pytest.MonkeyPatch, session_factory: Any
) -> None:
    customer = await make.customer()
    before = stored_files(crm_settings)
    monkeypatch.setattr(crm_settings, "documents_max_bytes", 4096)
    r = await upload(client, {"customer_id": customer["id"]})
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"] == "documents are at most 4096 bytes"
    assert stored_files(crm_settings) == before
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 0


async def test_content_types_are_checked_against_the_allowed_list(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer())["id"]
    assert (
        await upload(client, {"customer_id": cid}, name="page.html", content=b"<script>", ctype="text/html")
    ).status_code == 415
    guessed = await upload(client, {"customer_id": cid}, name="scan.pdf", ctype="application/octet-stream")
    assert guessed.status_code == 201 and guessed.json()["content_type"] == "application/pdf"
    assert (await upload(client, {"customer_id": cid}, name="tool.exe", ctype="application/octet-stream")).status_code == 415
    not_multipart = await client.post("/v1/documents", json={"customer_id": cid})
    assert not_multipart.status_code == 415


async def test_bad_upload_requests_are_422(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer())["id"]
    no_file = await client.post("/v1/documents", files={"customer_id": (None, cid)})  # multipart, but no file part
    assert no_file.status_code == 422 and no_file.json()["errors"][0]["loc"] == ["body", "file"]
    assert (await client.post("/v1/documents", data={"customer_id": cid})).status_code == 415  # urlencoded
    assert (await upload(client, {})).status_code == 422
    assert (await upload(client, {"customer_id": "not-a-uuid"})).status_code == 422
    assert (await upload(client, {"customer_id": str(uuid.uuid4())})).status_code == 422
    assert (await upload(client, {"deal_id": str(uuid.uuid4())})).status_code == 422
    assert (await upload(client, {"customer_id": cid}, content=b"")).status_code == 422
    broken = await client.post(
        "/v1/documents", content=b"--b\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert broken.status_code == 422
    # PostgreSQL text cannot hold a NUL: refused as in a JSON body, not a 500 at INSERT.
    nul = await upload(client, {"customer_id": cid, "description": "Signed\x00offer"})
    assert nul.status_code == 422 and nul.headers["content-type"] == "application/problem+json"
    assert nul.json()["errors"][0]["loc"] == ["body", "description"]
    # ... and the OpenAPI document says so, as it does for every free-text field of a JSON body.
    paths = (await client.get("/openapi.json")).json()["paths"]
    fields = paths["/v1/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert fields["description"]["pattern"] == NO_NUL


def multipart(customer_id: str, *parts: tuple[str, bytes]) -> bytes:
    """A multipart body (boundary `b`) with the customer_id, the text `parts` and a text file."""
    body = b'--b\r\nContent-Disposition: form-data; name="customer_id"\r\n\r\n' + customer_id.encode() + b"\r\n"
    for name, value in parts:
        body += b'--b\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n' + value + b"\r\n"
    file_part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\n'
    return body + file_part + b"line1\r\nline2\r\n--b--\r\n"


MULTIPART = {"content-type": "multipart/form-data; boundary=b"}


async def test_a_body_without_its_closing_boundary_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, make: Any, crm_settings: CRMSettings, session_factory: Any
) -> None:
    cid = (await make.customer())["id"]
    before = stored_files(crm_settings)
    complete = multipart(cid)
    cut = complete[: complete.index(b"line2") + len(b"line2\r\n-")]  # the file, then the body stops
    r = await client.post("/v1/documents", content=cut, headers=MULTIPART)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"].startswith("malformed multipart body")
    assert stored_files(crm_settings) == before
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 0
    whole = await client.post("/v1/documents", content=complete, headers=MULTIPART)
    assert whole.status_code == 201 and whole.json()["size_bytes"] == len(b"line1\r\nline2")


async def test_a_chunked_body_is_capped_as_one_with_a_content_length(
    client: httpx.AsyncClient, make: Any, crm_settings: CRMSettings, monkeypatch: pytest.MonkeyPatch, session_factory: Any
) -> None:
    """The body cap is lifted for uploads, whose route applies its own limit: to the whole body,
    not only to the file part, however the body is framed."""
    cid = (await make.customer())["id"]
    monkeypatch.setattr(crm_settings, "documents_max_bytes", 4096)
    body = multipart(cid, ("padding", b"p" * 200_000))  # an ignored part, far over the limit; a tiny file
    assert len(body) < crm_settings.max_body_bytes  # so the route's limit is what refuses it

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    with_length = await client.post("/v1/documents", content=body, headers=MULTIPART)
    without_length = await client.post("/v1/documents", content=chunked(), headers=MULTIPART)
    for r in (with_length, without_length):
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == "documents are at most 4096 bytes"
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 0


async def test_the_description_limit_counts_characters_as_the_schema_says(client: httpx.AsyncClient, make: Any) -> None:
    cid = (await make.customer())["id"]
    paths = (await client.get("/openapi.json")).json()["paths"]
    schema = paths["/v1/documents"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    limit = schema["properties"]["description"]["maxLength"]
    for description in ("€" * 4000, "€" * limit):  # 3 bytes each in UTF-8
        r = await upload(client, {"customer_id": cid, "description": description})
        assert r.status_code == 201, r.text
        assert (await client.get(f"/v1/documents/{r.json()['id']}")).json()["description"] == description
    too_long = await upload(client, {"customer_id": cid, "description": "a" * (limit + 1)})
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["loc"] == ["body", "description"]


async def test_delete_removes_the_record_and_the_file(client: httpx.AsyncClient, make: Any, crm_settings: CRMSettings) -> None:
    doc = (await upload(client, {"customer_id": (await make.customer())["id"]})).json()
    assert len(stored_files(crm_settings)) >= 1
    count = len(stored_files(crm_settings))
    assert (await client.delete(f"/v1/documents/{doc['id']}")).status_code == 204
    assert len(stored_files(crm_settings)) == count - 1
    assert (await client.get(doc["download_url"])).status_code == 404
    assert (await client.delete(f"/v1/documents/{doc['id']}")).status_code == 404


async def test_upload_with_an_idempotency_key_stores_one_document(
    client: httpx.AsyncClient, make: Any, session_factory: Any
) -> None:
    cid = (await make.customer())["id"]
    first = await upload(client, {"customer_id": cid}, headers={"Idempotency-Key": "up-1"})
    again = await upload(client, {"customer_id": cid}, headers={"Idempotency-Key": "up-1"})
    assert first.status_code == again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other_file = await upload(client, {"customer_id": cid}, content=b"%PDF other", headers={"Idempotency-Key": "up-1"})
    assert other_file.status_code == 422
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 1


async def test_an_upload_key_is_kept_as_long_as_the_idempotency_setting_says(
    client: httpx.AsyncClient, make: Any, crm_settings: CRMSettings, monkeypatch: pytest.MonkeyPatch, session_factory: Any
) -> None:
    monkeypatch.setattr(crm_settings, "idempotency_ttl_hours", 48)
    cid = (await make.customer())["id"]
    first = await upload(client, {"customer_id": cid}, headers={"Idempotency-Key": "up-ttl"})
    assert first.status_code == 201
    async with session_factory() as session:
        aged = "UPDATE idempotency_keys SET created_at = created_at - interval '25 hours' WHERE key = 'up-ttl'"
        assert (await session.execute(text(aged))).rowcount == 1
        await session.commit()
    again = await upload(client, {"customer_id": cid}, headers={"Idempotency-Key": "up-ttl"})
    assert again.status_code == 201 and again.headers.get("idempotent-replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Document)) == 1


async def test_a_share_link_works_without_a_key_until_it_expires(
    client: httpx.AsyncClient, make: Any, keys: dict[str, str], crm_app: FastAPI
) -> None:
    doc = (await upload(client, {"customer_id": (await make.customer())["id"]})).json()
    share = f"/v1/documents/{doc['id']}/share"
    assert (await client.post(share, json={}, headers=bearer(keys["read"]))).status_code == 403
    assert (await client.post(share, json={"expires_in": 10**9})).status_code == 422
    link = (await client.post(share, json={"expires_in": 600})).json()
    url = httpx.URL(link["url"])
    assert url.path == f"/v1/shared/documents/{doc['id']}"
    open_get = await client.get(url.path, params=dict(url.params), headers={"Authorization": ""})
    assert open_get.status_code == 200 and open_get.content == PDF
    assert open_get.headers["content-disposition"] == 'attachment; filename="offer.pdf"'

    tampered = dict(url.params) | {"expires": str(int(url.params["expires"]) + 3600)}
    assert (await client.get(url.path, params=tampered, headers={"Authorization": ""})).status_code == 403
    past = int(time.time()) - 10
    signature = crm_app.state.document_links.signature(uuid.UUID(doc["id"]), past)
    expired = await client.get(url.path, params={"expires": past, "signature": signature}, headers={"Authorization": ""})
    assert expired.status_code == 410
    assert expired.headers["content-type"] == "application/problem+json"
    documented = (await client.get("/openapi.json")).json()["paths"]["/v1/shared/documents/{document_id}"]["get"]
    assert {"403", "404", "410"} <= set(documented["responses"])
    assert (await client.get(url.path, params={"expires": "x", "signature": "y"})).status_code == 422

    await client.delete(f"/v1/documents/{doc['id']}")
    assert (await client.get(url.path, params=dict(url.params), headers={"Authorization": ""})).status_code == 404


async def test_a_share_link_only_opens_the_document_it_was_signed_for(client: httpx.AsyncClient, make: Any) -> None:
    customer_id = (await make.customer())["id"]
    first = (await upload(client, {"customer_id": customer_id})).json()
    second = (await upload(client, {"customer_id": customer_id}, content=b"%PDF other")).json()
    link = httpx.URL((await client.post(f"/v1/documents/{first['id']}/share", json={"expires_in": 600})).json()["url"])
    borrowed = await client.get(f"/v1/shared/documents/{second['id']}", params=dict(link.params), headers={"Authorization": ""})
    assert borrowed.status_code == 403
    assert borrowed.headers["content-type"].startswith("application/problem+json")
    forged = dict(link.params) | {"signature": "A" * len(link.params["signature"])}
    assert (await client.get(link.path, params=forged, headers={"Authorization": ""})).status_code == 403


# --- an erase or a merge of the document's customer meanwhile ------------------------------------


async def test_a_document_uploaded_while_its_customer_is_merged_lands_on_the_survivor(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any
) -> None:
    survivor, duplicate = await make.customer(), await make.customer()
    answer = await sent_during(
        crm_app, merge(crm_app, survivor["id"], duplicate["id"]), lambda: upload(client, {"customer_id": duplicate["id"]})
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["customer_id"] == survivor["id"]
    assert (await client.get("/v1/documents", params={"customer_id": duplicate["id"]})).json()["items"] == []
    listed = (await client.get("/v1/documents", params={"customer_id": survivor["id"]})).json()["items"]
    assert [d["id"] for d in listed] == [answer.json()["id"]]


async def test_a_document_uploaded_while_its_customer_is_erased_is_refused_and_leaves_no_file(
    client: httpx.AsyncClient, crm_app: FastAPI, make: Any, crm_settings: CRMSettings
) -> None:
    """The erasure deletes the customer's files: one uploaded meanwhile would have stayed."""
    customer = await make.customer()
    before = stored_files(crm_settings)
    answer = await sent_during(crm_app, erase(crm_app, customer["id"]), lambda: upload(client, {"customer_id": customer["id"]}))
    assert answer.status_code == 422 and answer.json()["errors"][0]["msg"] == "erased", answer.text
    assert (await client.get("/v1/documents", params={"customer_id": customer["id"]})).json()["items"] == []
    assert stored_files(crm_settings) == before
