"""Planning an S3 prefix of more files than one listing page holds, counted at the wire (a logging proxy in front of the
test S3 server): the listing is paged (1,000 keys a request), each file costs one ranged GET
for its footer, and no file gets a HEAD of its own."""
from __future__ import annotations

import io
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.plan import plan

pytestmark = pytest.mark.slow


def test_an_s3_prefix_of_1001_files_is_listed_in_pages_and_read_once_per_file(s3_server) -> None:
    from request_log import LoggingProxy

    files = 1_001
    sink = io.BytesIO()
    pq.write_table(pa.table({"text": ["a", "b", "c"]}), sink)
    prefix = f"{s3_server.bucket}/plan-{time.time_ns()}"
    s3_server.filesystem().pipe({f"{prefix}/part-{i:05d}.parquet": sink.getvalue() for i in range(files)})
    proxy = LoggingProxy(("127.0.0.1", s3_server.ports[0]))
    try:
        options = {**s3_server.storage_options, "endpoint_url": proxy.endpoint, "skip_instance_cache": True}
        started = time.perf_counter()
        work = plan([f"s3://{prefix}/"], ["text"], 50_000, options, text_columns=["text"])
        seconds = time.perf_counter() - started
    finally:
        proxy.close()
    assert len(work.shards) == files and work.num_rows == 3 * files
    assert work.shards[0].url == f"s3://{prefix}/part-00000.parquet" and work.shards[0].version
    key = prefix.split("/", 1)[1]
    listings = [path for method, path, _ in proxy.requests if method == "GET" and "list-type=2" in path]
    lookups = [path for path in listings if "max-keys=1&" in path]  # info() of the prefix itself
    lists = [path for path in listings if path not in lookups]
    footers = [path for method, path, _ in proxy.requests if method == "GET" and f"/{key}/part-" in path]
    heads = [path for method, path, _ in proxy.requests if method == "HEAD"]
    assert len(lists) == 2, lists  # 1,001 keys: two pages of ListObjectsV2
    assert len(footers) == files and len(set(footers)) == files
    assert len(heads) + len(lookups) <= 2, (heads[:5], lookups)  # the prefix itself is looked up; no file is
    print(f"\nplanned {files} S3 files in {seconds:.1f} s: {len(lists)} list pages, {len(footers)} footer GETs, "
          f"{len(heads) + len(lookups)} lookups of the prefix, no HEAD per file")
