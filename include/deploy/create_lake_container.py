"""Create the lake's blob container (sandbox: Azurite), then exit.

docker-compose's mde-lake-init service runs this in the local / azurite profiles. It
resolves the lake exactly as the pipeline does (Variables ``mde_lake_root`` and
``mde_lake_conn_id``, connection ``mde_lake``) and creates the container named in the
root when it is missing. Azurite takes a moment to accept connections, so failures are
retried until ``--timeout`` seconds have passed; then the last error is reported.

Against real ADLS Gen2 the container is normally created with the storage account, and
the pipeline's identity needs no right to create containers; this script is not run there.
"""

from __future__ import annotations

import argparse
import sys
import time


def container_of(root: str) -> str:
    """``mde-lake`` for ``abfs://mde-lake@account.dfs.core.windows.net/prefix``."""
    return root.split("/", 1)[0]


def ensure_container(location, *, timeout: float, interval: float = 2.0, sleep=time.sleep, now=time.monotonic) -> bool:
    """Create the location's container if missing. True when it was created, False
    when it existed. Retries any error until ``timeout``; then raises the last one."""
    container = container_of(location.root)
    if hasattr(location.fs, "assume_container_exists"):
        # adlfs takes any error while looking a container up for "it exists" unless
        # told otherwise; here an unreachable store must be an error, not a success.
        location.fs.assume_container_exists = False
    deadline = now() + timeout
    while True:
        try:
            if location.fs.exists(container):
                return False
            location.fs.mkdir(container, create_parents=True)
            return True
        except Exception:
            if now() >= deadline:
                raise
            sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the lake's blob container if it is missing.")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to keep retrying")
    args = parser.parse_args(argv)

    from airflow.configuration import conf

    sys.path.insert(0, conf.get("core", "plugins_folder"))
    from mde_pipeline.airflow.lake_location import configured_lake_location
    from mde_pipeline.lake.location import LakeLocationError

    try:
        location = configured_lake_location()
    except LakeLocationError as exc:
        print(f"ERROR  {exc}", file=sys.stderr)
        return 1
    if location.is_local:
        print(f"lake root {location.root} is a local folder: nothing to create")
        return 0
    try:
        created = ensure_container(location, timeout=args.timeout)
    except Exception as exc:  # the SDK's errors name the account and status, not keys
        print(f"ERROR  cannot create container {container_of(location.root)!r}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    state = "created" if created else "already there"
    print(f"lake container {container_of(location.root)!r} {state} (connection {location.conn_id!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
