"""The installer's web UI shows what the box sees."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.activity import Activity
from gateway.readers import ReaderHealth
from gateway.web import create_app


def _client(activity):
    status = {
        "gateway": "door-1",
        "site": "oslo",
        "software": "0.1.0",
        "online": False,
        "entitlements_version": 3,
        "records": 2,
        "journal_pending": 0,
        "clock": "synced",
        "doors": {"main-in": {"mode": "normal", "lock": "locked", "contact": "closed"}},
    }
    return TestClient(create_app(lambda: status, activity))


def test_status_includes_reader_health():
    activity = Activity()
    activity.health(ReaderHealth("nfc-1", False, "serial port /dev/ttyUSB0 not found"))
    body = _client(activity).get("/api/status").json()
    assert body["readers"]["nfc-1"]["online"] is False
    assert "not found" in body["readers"]["nfc-1"]["reason"]
    assert body["doors"]["main-in"]["lock"] == "locked"


def test_activity_returns_only_what_is_new():
    activity = Activity(size=3)
    for i in range(5):
        activity.add("decision", door="main-in", decision="granted", reason="ok", member=f"M{i}")
    client = _client(activity)
    items = client.get("/api/activity").json()
    assert [i["member"] for i in items] == ["M2", "M3", "M4"]  # bounded
    assert client.get(f"/api/activity?after={items[-1]['n']}").json() == []


def test_page_is_served():
    page = _client(Activity()).get("/")
    assert page.status_code == 200 and "What the box sees" in page.text


def test_bad_query_gets_a_clear_error_not_a_crash():
    assert _client(Activity()).get("/api/activity?after=abc").status_code == 422
