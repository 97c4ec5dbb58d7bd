"""The generated OpenAPI document of the REST edge (scripts/openapi.py → gen/openapi.json, SPEC §5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.openapi import build, render

ROOT = Path(__file__).resolve().parents[2]
VERBS = {"get", "put", "post", "delete", "patch"}
LIB, DL = "/api/v1/library/me", "/api/v1/download-client"

# SPEC §5, every route: (method, path) → operationId.
ROUTES = {
    ("GET", f"{LIB}/items"): "LibraryService_ListLibraryItems",
    ("PATCH", f"{LIB}/items/{{library_item_id}}"): "LibraryService_UpdateLibraryItem",
    ("GET", f"{LIB}/categories"): "LibraryService_ListCategories",
    ("POST", f"{LIB}/categories"): "LibraryService_CreateCategory",
    ("GET", f"{LIB}/wishlist"): "LibraryService_ListWishlist",
    ("POST", f"{LIB}/wishlist"): "LibraryService_AddWishlistItem",
    ("DELETE", f"{LIB}/wishlist/{{product_id}}"): "LibraryService_RemoveWishlistItem",
    # family sharing (SPEC §5, additive): list / invite, and the transitions of one link
    ("GET", f"{LIB}/family/links"): "LibraryService_ListFamilyLinks",
    ("POST", f"{LIB}/family/links"): "LibraryService_CreateFamilyLink",
    **{
        ("POST", f"{LIB}/family/links/{{link_id}}/{action.lower()}"): f"LibraryService_{action}FamilyLink"
        for action in ("Accept", "Decline", "Cancel", "Revoke")
    },
    ("GET", f"{LIB}/playtime"): "PlaytimeTrackerService_GetPlaytimeStats",
    ("POST", f"{LIB}/playtime/sessions/start"): "PlaytimeTrackerService_StartPlaytimeSession",
    ("POST", f"{LIB}/playtime/sessions/heartbeat"): "PlaytimeTrackerService_RecordPlaytimeHeartbeat",
    ("POST", f"{LIB}/playtime/sessions/end"): "PlaytimeTrackerService_EndPlaytimeSession",
    ("POST", f"{LIB}/playtime/sessions/offline"): "PlaytimeTrackerService_RecordOfflineSessions",
    ("GET", f"{LIB}/achievements/status"): "AchievementService_ListAchievementStatuses",
    ("POST", f"{LIB}/achievements/progress"): "AchievementService_UpdateAchievementProgress",
    ("GET", f"{LIB}/savegames/{{product_id}}"): "CloudSaveService_ListSaveGames",
    (
        "POST",
        f"{LIB}/savegames/{{product_id}}/slots/{{slot_name}}/upload-url",
    ): "CloudSaveService_RequestSaveGameUploadURL",
    ("POST", f"{LIB}/savegames/confirm-upload"): "CloudSaveService_ConfirmSaveGameUpload",
    ("GET", f"{LIB}/savegames/{{savegame_id}}/download-url"): "CloudSaveService_RequestSaveGameDownloadURL",
    (
        "POST",
        f"{LIB}/savegames/{{product_id}}/slots/{{slot_name}}/resolve",
    ): "CloudSaveService_ResolveSaveGameConflict",
    (
        "POST",
        f"{LIB}/savegames/{{product_id}}/slots/{{slot_name}}/restore",
    ): "CloudSaveService_RestoreSaveGameVersion",
    ("GET", f"{LIB}/game-settings/{{product_id}}"): "GameSettingsSyncService_GetGameSettings",
    ("PUT", f"{LIB}/game-settings/{{product_id}}"): "GameSettingsSyncService_UpdateGameSettings",
    ("POST", f"{DL}/downloads"): "DownloadService_StartDownload",
    ("GET", f"{DL}/downloads"): "DownloadService_ListDownloads",
    ("GET", f"{DL}/downloads/{{download_id}}"): "DownloadService_GetDownload",
    ("POST", f"{DL}/downloads/{{download_id}}/pause"): "DownloadService_PauseDownload",
    ("POST", f"{DL}/downloads/{{download_id}}/resume"): "DownloadService_ResumeDownload",
    ("POST", f"{DL}/downloads/{{download_id}}/cancel"): "DownloadService_CancelDownload",
    ("POST", f"{DL}/downloads/{{download_id}}/reprioritize"): "DownloadService_ReprioritizeDownload",
    ("GET", f"{DL}/downloads/{{download_id}}/manifest"): "DownloadService_GetDownloadManifest",
    ("POST", f"{DL}/downloads/{{download_id}}/progress"): "DownloadService_ReportDownloadProgress",
    ("POST", f"{DL}/updates/check"): "DownloadService_CheckUpdates",
    ("POST", f"{DL}/verifications"): "DownloadService_VerifyInstallation",
    ("GET", f"{DL}/settings"): "DownloadService_GetDownloadSettings",
    ("PATCH", f"{DL}/settings"): "DownloadService_UpdateDownloadSettings",
    ("GET", f"{DL}/products/{{product_id}}/versions"): "DownloadService_ListProductVersions",
    ("PATCH", f"{LIB}/wishlist/{{product_id}}"): "LibraryService_UpdateWishlistItem",
    ("PATCH", f"{LIB}/categories/{{category_id}}"): "LibraryService_UpdateCategory",
    ("DELETE", f"{LIB}/categories/{{category_id}}"): "LibraryService_DeleteCategory",
}


@pytest.fixture(scope="module")
def doc() -> dict:
    return json.loads((ROOT / "gen" / "openapi.json").read_text(encoding="utf-8"))


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for verb, op in item.items():
            if verb in VERBS:
                yield verb.upper(), path, op


def op(doc: dict, method: str, path: str) -> dict:
    return doc["paths"][path][method.lower()]


def test_committed_document_is_what_the_descriptor_generates(doc):
    text = (ROOT / "gen" / "openapi.json").read_text(encoding="utf-8")
    assert render(build((ROOT / "gen" / "descriptor.binpb").read_bytes())) == text
    assert text.endswith("}\n")
    assert doc["openapi"] == "3.0.3"


def test_exactly_the_rest_routes_of_the_spec(doc):
    found = {(method, path): o["operationId"] for method, path, o in operations(doc)}
    assert found == ROUTES


def test_internal_rpcs_have_no_route(doc):
    ids = {o["operationId"] for _, _, o in operations(doc)}
    for rpc in (
        "GrantEntitlements",
        "RevokeEntitlement",
        "CheckEntitlement",
        "UpsertProducts",
        "UpsertAchievementDefinitions",
        "PublishProductVersion",
        "BeginVersionUpload",
        "CommitVersionUpload",
    ):
        assert not any(i.endswith(f"_{rpc}") for i in ids), rpc
        assert rpc not in json.dumps(doc["paths"]), rpc


def test_list_library_items_filters_are_typed_and_documented_query_parameters(doc):
    params = {p["name"]: p for p in op(doc, "GET", f"{LIB}/items")["parameters"]}
    assert {"sortBy", "pageSize", "pageToken", "includeHidden", "status", "categoryId", "search"} <= set(
        params
    )
    assert all(p["in"] == "query" for p in params.values())
    assert params["sortBy"]["schema"]["enum"] == [
        "SORT_BY_UNSPECIFIED",
        "NAME_ASC",
        "LAST_PLAYED_DESC",
        "ADDED_AT_DESC",
    ]
    assert params["pageSize"]["schema"] == {"type": "integer", "format": "int32", "minimum": 0}
    assert params["includeHidden"]["schema"] == {"type": "boolean"}
    assert params["pageSize"]["description"]


def test_path_parameters_are_required_and_bodies_carry_only_what_the_http_rule_maps(doc):
    patch = op(doc, "PATCH", f"{LIB}/items/{{library_item_id}}")
    assert [(p["name"], p["in"], p["required"]) for p in patch["parameters"]] == [
        ("library_item_id", "path", True)
    ]
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert "libraryItemId" not in body["properties"]  # body "*" minus the path parameters
    assert {"isHidden", "updateMask"} <= set(body["properties"])
    assert body["properties"]["updateMask"]["type"] == "string"  # FieldMask

    delete = op(doc, "DELETE", f"{LIB}/wishlist/{{product_id}}")
    assert [p["name"] for p in delete["parameters"]] == ["product_id"]
    assert "requestBody" not in delete

    put = op(doc, "PUT", f"{LIB}/game-settings/{{product_id}}")
    schema = put["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["settingsPayload"]["type"] == "object"  # Struct
    assert "settingsPayload" in schema["required"]

    pause = op(doc, "POST", f"{DL}/downloads/{{download_id}}/pause")
    assert [p["name"] for p in pause["parameters"]] == ["download_id"]

    # body: "settings" → the body is that field's message; the other fields are query parameters.
    settings = op(doc, "PATCH", f"{DL}/settings")
    assert settings["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/download.v1.DownloadSettings"
    }
    assert [p["name"] for p in settings["parameters"]] == ["updateMask", "deviceId", "requestId"]

    get_settings = op(doc, "GET", f"{DL}/settings")
    assert get_settings["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/download.v1.GetDownloadSettingsResponse"
    }


def test_every_operation_is_documented_secured_and_has_error_responses(doc):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for method, path, o in operations(doc):
        assert o["security"] == [{"bearerAuth": []}], (method, path)
        assert o["summary"] and o["description"], (method, path)
        assert o["tags"] == [o["operationId"].split("_")[0]]
        for status in ("200", "400", "401", "403", "404", "409", "429", "501", "503"):
            assert status in o["responses"], (method, path, status)
    status = doc["components"]["schemas"]["Status"]
    assert set(status["properties"]) == {"code", "message", "details"}
    assert "@type" in status["properties"]["details"]["items"]["properties"]
    heartbeat = op(doc, "POST", f"{LIB}/playtime/sessions/heartbeat")
    assert heartbeat["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "object"}


def test_schemas_follow_the_proto3_json_mapping_and_field_behaviours(doc):
    schemas = doc["components"]["schemas"]
    item = schemas["library.v1.LibraryItem"]["properties"]
    assert item["totalPlaytimeSeconds"]["type"] == "string"  # int64
    assert item["totalPlaytimeSeconds"]["format"] == "int64"
    assert item["totalPlaytimeSeconds"]["readOnly"] is True  # OUTPUT_ONLY
    assert item["totalPlaytimeSeconds"]["description"]
    upload = schemas["library.v1.RequestSaveGameUploadURLResponse"]["properties"]
    assert upload["requiredHeaders"]["additionalProperties"] == {"type": "string"}  # map<string, string>
    assert upload["expiresAt"]["format"] == "date-time"  # Timestamp
    product = schemas["library.v1.Product"]
    assert "productId" in product["required"]


def test_every_ref_resolves(doc):
    refs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        target = doc
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            assert part in target, ref
            target = target[part]


def test_request_schemas_carry_the_contracts_field_rules(doc):
    """format uuid, lengths, patterns, ranges, item counts and `required` from the buf.validate rules."""
    body = op(doc, "POST", f"{LIB}/wishlist")["requestBody"]["content"]["application/json"]["schema"]
    props = body["properties"]
    assert props["productId"]["format"] == "uuid" and props["productId"]["minLength"] == 1
    assert props["priority"]["minimum"] == 0
    assert props["notes"]["maxLength"] == 1000
    assert "productId" in body["required"]
    params = {p["name"]: p for p in op(doc, "GET", f"{LIB}/playtime")["parameters"]}
    assert params["productIds"]["schema"]["maxItems"] == 200
    assert params["productIds"]["schema"]["items"]["pattern"].startswith("^[0-9a-fA-F]{8}-")


def test_a_required_enum_does_not_offer_its_unspecified_value(doc):
    resolve = op(doc, "POST", f"{LIB}/savegames/{{product_id}}/slots/{{slot_name}}/resolve")
    schema = resolve["requestBody"]["content"]["application/json"]["schema"]
    assert "RESOLUTION_UNSPECIFIED" not in schema["properties"]["resolution"]["enum"]
    assert "KEEP_CLOUD" in schema["properties"]["resolution"]["enum"]


def test_response_schemas_describe_what_the_server_fills_without_request_rules(doc):
    item = doc["components"]["schemas"]["library.v1.LibraryItem"]
    assert "format" not in item["properties"]["productId"]


def test_a_rule_across_fields_is_stated_as_alternatives_that_cover_every_value_once(doc):
    """ResolveSaveGameConflict: new_slot_name with KEEP_BOTH only (the servicer's rule), so a client that
    follows the schema never sends it with KEEP_CLOUD / KEEP_LOCAL, nor KEEP_BOTH without it."""
    resolve = op(doc, "POST", f"{LIB}/savegames/{{product_id}}/slots/{{slot_name}}/resolve")
    schema = resolve["requestBody"]["content"]["application/json"]["schema"]
    branches = {v: b for b in schema["oneOf"] for v in b["properties"]["resolution"]["enum"]}
    assert sorted(branches) == sorted(schema["properties"]["resolution"]["enum"])
    assert sum(len(b["properties"]["resolution"]["enum"]) for b in schema["oneOf"]) == len(branches)
    assert branches["KEEP_BOTH"]["required"] == ["newSlotName"]
    for other in ("KEEP_CLOUD", "KEEP_LOCAL"):
        assert branches[other]["properties"]["newSlotName"]["maxLength"] == 0
    assert schema["properties"]["newSlotName"]["pattern"].endswith("{1,64}$")  # so "" is refused too
