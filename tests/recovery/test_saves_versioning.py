"""The store keeps earlier versions of save objects (bucket versioning, set up by `make stack-up`): an object
deleted by mistake, or overwritten, is still there under its earlier version id. The save service's own
version history (earlier save versions as rows and objects of their own) stays the first line of defence;
this is the second, for an object lost behind the service's back."""

from __future__ import annotations

import os
import uuid

import aioboto3


async def test_a_deleted_or_overwritten_save_object_keeps_its_earlier_versions(settings):
    bucket = settings.s3_bucket
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
    ) as client:
        assert (await client.get_bucket_versioning(Bucket=bucket))["Status"] == "Enabled"
        key = f"saves/{uuid.uuid4()}/{uuid.uuid4()}/{uuid.uuid4()}"
        first, second = os.urandom(1024), os.urandom(1024)
        v1 = (await client.put_object(Bucket=bucket, Key=key, Body=first))["VersionId"]
        await client.put_object(Bucket=bucket, Key=key, Body=second)
        await client.delete_object(Bucket=bucket, Key=key)

        assert (await client.list_objects_v2(Bucket=bucket, Prefix=key)).get("KeyCount", 0) == 0  # gone
        listed = await client.list_object_versions(Bucket=bucket, Prefix=key)
        assert len(listed.get("Versions", [])) == 2 and len(listed.get("DeleteMarkers", [])) == 1
        old = await client.get_object(Bucket=bucket, Key=key, VersionId=v1)
        assert await old["Body"].read() == first
        # recovery: copy the version back as the current object
        await client.copy_object(
            Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key, "VersionId": v1}
        )
        current = await client.get_object(Bucket=bucket, Key=key)
        assert await current["Body"].read() == first
